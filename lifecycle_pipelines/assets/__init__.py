"""Software-defined assets, one folder per capability."""

"""Great Expectations adapter for Dagster asset checks (lands with the archival capability)."""

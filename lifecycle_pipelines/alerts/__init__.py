"""Alerts to the operators' SNS topic (spec 9.3): failed data-quality checks and failed runs."""

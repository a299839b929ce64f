"""Dagster code location for the data lifecycle of an AWS e-commerce platform."""

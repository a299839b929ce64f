"""Hourly loads of the shop into the warehouse star schema (Redshift; PostgreSQL locally)."""

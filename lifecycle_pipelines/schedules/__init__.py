"""Schedules and sensors, one per cadence."""

import dagster as dg

storage_layout_audit_job = dg.define_asset_job(
    "storage_layout_audit_job",
    selection=dg.AssetSelection.assets("storage_layout_audit"),
    description="Audit buckets and tables against the storage specification.",
)

storage_layout_audit_daily = dg.ScheduleDefinition(
    name="storage_layout_audit_daily",
    job=storage_layout_audit_job,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

__all__ = ["storage_layout_audit_daily", "storage_layout_audit_job"]

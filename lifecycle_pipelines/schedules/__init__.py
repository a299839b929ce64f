"""Schedules and sensors, one per cadence. `asset_schedule` builds the job and the schedule of
an unpartitioned asset in one place."""

from __future__ import annotations

from typing import Any

import dagster as dg


def asset_schedule(
    asset: str, job_name: str, schedule_name: str, cron: str, description: str
) -> tuple[dg.UnresolvedAssetJobDefinition, dg.ScheduleDefinition]:
    """A job materializing `asset` and a running-by-default UTC schedule for it."""
    job = dg.define_asset_job(
        job_name, selection=dg.AssetSelection.assets(asset), description=description
    )
    schedule = dg.ScheduleDefinition(
        name=schedule_name,
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=description,
    )
    return job, schedule


def partitioned_asset_schedule(
    asset: str,
    job_name: str,
    schedule_name: str,
    partitions_def: dg.PartitionsDefinition,
    description: str,
    minute_of_hour: int | None = None,
    hour_of_day: int | None = None,
) -> tuple[dg.UnresolvedAssetJobDefinition, Any]:
    """A partitioned job for `asset` and a running-by-default schedule of its latest partition
    at `hour_of_day`/`minute_of_hour` (as build_schedule_from_partitioned_job)."""
    job = dg.define_asset_job(
        job_name,
        selection=dg.AssetSelection.assets(asset),
        partitions_def=partitions_def,
        description=description,
    )
    schedule = dg.build_schedule_from_partitioned_job(
        job,
        name=schedule_name,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        minute_of_hour=minute_of_hour,
        hour_of_day=hour_of_day,
    )
    return job, schedule


storage_layout_audit_job, storage_layout_audit_daily = asset_schedule(
    "storage_layout_audit",
    "storage_layout_audit_job",
    "storage_layout_audit_daily",
    "0 6 * * *",
    "Audit buckets and tables against the storage specification.",
)

__all__ = [
    "asset_schedule",
    "partitioned_asset_schedule",
    "storage_layout_audit_daily",
    "storage_layout_audit_job",
]

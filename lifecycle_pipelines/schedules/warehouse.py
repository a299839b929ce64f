"""The hourly warehouse schedule: the hour that just ended, at ten past (so that transactions
open across the hour boundary have committed; the load refuses an hour that is not closed)."""

import dagster as dg

from lifecycle_pipelines.assets.warehouse import WAREHOUSE_PARTITIONS

warehouse_job = dg.define_asset_job(
    "warehouse_job",
    selection=dg.AssetSelection.assets("warehouse_hourly"),
    partitions_def=WAREHOUSE_PARTITIONS,
    description="Load one hour of changes into the warehouse star schema.",
)

warehouse_hourly_schedule = dg.build_schedule_from_partitioned_job(
    warehouse_job,
    name="warehouse_hourly_schedule",
    minute_of_hour=10,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

"""The hourly warehouse schedule: the hour that just ended, at ten past (so that transactions
open across the hour boundary have committed; the load refuses an hour that is not closed)."""

from lifecycle_pipelines.assets.warehouse import WAREHOUSE_PARTITIONS
from lifecycle_pipelines.schedules import partitioned_asset_schedule

warehouse_job, warehouse_hourly_schedule = partitioned_asset_schedule(
    "warehouse_hourly",
    "warehouse_job",
    "warehouse_hourly_schedule",
    WAREHOUSE_PARTITIONS,
    "Load one hour of changes into the warehouse star schema.",
    minute_of_hour=10,
)

"""The daily product sync schedule: today's partition, every day at 02:00 UTC."""

import dagster as dg

from lifecycle_pipelines.assets.search_sync import SEARCH_PARTITIONS

search_sync_job = dg.define_asset_job(
    "search_sync_job",
    selection=dg.AssetSelection.assets("search_products"),
    partitions_def=SEARCH_PARTITIONS,
    description="Sync products into the search index (rotating on a new month).",
)

search_products_daily = dg.build_schedule_from_partitioned_job(
    search_sync_job,
    name="search_products_daily",
    hour_of_day=2,
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

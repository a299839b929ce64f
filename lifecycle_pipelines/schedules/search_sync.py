"""The daily product sync schedule: today's partition, every day at 02:00 UTC."""

from lifecycle_pipelines.assets.search_sync import SEARCH_PARTITIONS
from lifecycle_pipelines.schedules import partitioned_asset_schedule

search_sync_job, search_products_daily = partitioned_asset_schedule(
    "search_products",
    "search_sync_job",
    "search_products_daily",
    SEARCH_PARTITIONS,
    "Sync products into the search index (rotating on a new month).",
    hour_of_day=2,
)

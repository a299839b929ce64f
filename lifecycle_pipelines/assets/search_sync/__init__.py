"""The search_sync group: the daily product sync into the monthly search indices."""

from lifecycle_pipelines.assets.search_sync.products_asset import (
    SEARCH_PARTITIONS,
    search_products,
)

__all__ = ["SEARCH_PARTITIONS", "search_products"]

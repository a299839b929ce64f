"""The archive group: monthly archival, purge, restore tests and retention expiry."""

from lifecycle_pipelines.assets.archive.month_assets import (
    ARCHIVE_PARTITIONS,
    archive_month_assets,
    build_month_assets,
)

__all__ = ["ARCHIVE_PARTITIONS", "archive_month_assets", "build_month_assets"]

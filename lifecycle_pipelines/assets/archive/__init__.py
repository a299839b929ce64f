"""The archive group: monthly archival, purge, restore tests and retention expiry."""

from lifecycle_pipelines.assets.archive.expiry_asset import archive_retention_expiry
from lifecycle_pipelines.assets.archive.month_assets import (
    ARCHIVE_PARTITIONS,
    archive_month_assets,
    build_month_assets,
)
from lifecycle_pipelines.assets.archive.restore_assets import (
    archive_restore_requests,
    archive_restore_verification,
)

__all__ = [
    "ARCHIVE_PARTITIONS",
    "archive_month_assets",
    "archive_restore_requests",
    "archive_restore_verification",
    "archive_retention_expiry",
    "build_month_assets",
]

"""The erasure group: soft delete per request (hard delete and certificates are still to come)."""

from lifecycle_pipelines.assets.erasure.soft_delete_asset import (
    ERASURE_PARTITIONS,
    erasure_soft_delete,
)

__all__ = ["ERASURE_PARTITIONS", "erasure_soft_delete"]

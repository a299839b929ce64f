"""The erasure group: intake, soft delete and hard delete per request, archive rewrites and the
ledger replay."""

from lifecycle_pipelines.assets.erasure.hard_delete_asset import ABSENT_CHECK, erasure_hard_delete
from lifecycle_pipelines.assets.erasure.intake_job import erasure_request_job
from lifecycle_pipelines.assets.erasure.soft_delete_asset import (
    ERASURE_PARTITIONS,
    erasure_soft_delete,
)
from lifecycle_pipelines.assets.erasure.upkeep_assets import (
    erasure_archive_rewrites,
    erasure_ledger_replay,
)

__all__ = [
    "ABSENT_CHECK",
    "ERASURE_PARTITIONS",
    "erasure_archive_rewrites",
    "erasure_hard_delete",
    "erasure_ledger_replay",
    "erasure_request_job",
    "erasure_soft_delete",
]

"""`archive_retention_expiry`: deletes archives past their retention period (daily)."""

from datetime import UTC, datetime

import dagster as dg

from lifecycle_pipelines.archive.expiry import expire_archives
from lifecycle_pipelines.control import ensure_control_schema
from lifecycle_pipelines.errors import retry_transient
from lifecycle_pipelines.policy import load_policy
from lifecycle_pipelines.resources import PostgresResource, S3Resource


@dg.asset(
    group_name="archive",
    kinds={"s3"},
    owners=["team:data-platform"],
    description=(
        "Archived objects past their retention period (retention.yaml) deleted with every "
        "version, unless Object Lock (legal hold or retention) forbids it; recorded in the "
        "manifest as expired or held."
    ),
)
def archive_retention_expiry(
    context: dg.AssetExecutionContext, control_db: PostgresResource, s3: S3Resource
) -> dg.MaterializeResult:
    with retry_transient(), control_db.connect(autocommit=True) as conn:
        ensure_control_schema(conn)
        report = expire_archives(
            conn, s3.client("s3"), load_policy().archived_types(), datetime.now(UTC).date()
        )
    for label in report.not_purged:
        context.log.warning(f"{label}: past retention but never purged; left in place")
    for line in report.held:
        context.log.info(f"held: {line}")
    for label in report.busy:
        context.log.info(f"{label}: another run holds the partition; left for the next pass")
    lines = [f"- expired: {p}" for p in report.partitions_expired] + [
        f"- held: {h}" for h in report.held
    ]
    return dg.MaterializeResult(
        metadata={
            "partitions_expired": dg.MetadataValue.int(len(report.partitions_expired)),
            "objects_deleted": dg.MetadataValue.int(report.objects_deleted),
            "versions_deleted": dg.MetadataValue.int(report.versions_deleted),
            "objects_held": dg.MetadataValue.int(len(report.held)),
            "partitions_busy": dg.MetadataValue.int(len(report.busy)),
            "summary": dg.MetadataValue.md("\n".join(lines) or "nothing past retention"),
        }
    )

"""Monthly archive and purge assets, one pair per archived data type of the retention policy.

`archive_<type>` extracts, encrypts, uploads and verifies one month; its schema, completeness and
reconciliation checks are blocking, so `purge_<type>` (downstream, same partition) never runs
after a failed verification. The purge also re-checks the manifest itself, so a purge launched
on its own cannot skip verification either.
"""

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
from pydantic import Field

from lifecycle_pipelines.archive.archiver import ArchiveResult, MonthArchiver
from lifecycle_pipelines.archive.glue import register_partition
from lifecycle_pipelines.archive.purge import purge_partition
from lifecycle_pipelines.archive.scope import check_partition
from lifecycle_pipelines.checks.gx import CHECK_NAMES
from lifecycle_pipelines.checks.results import check_result
from lifecycle_pipelines.errors import retry_transient
from lifecycle_pipelines.policy import DataTypePolicy, load_policy
from lifecycle_pipelines.resources import PostgresResource, S3Resource

ARCHIVE_START = "2023-01-01"
ARCHIVE_PARTITIONS = dg.MonthlyPartitionsDefinition(start_date=ARCHIVE_START, end_offset=0)
CHECK_DESCRIPTIONS = {
    "schema": "The archived objects have exactly the expected columns and Arrow types.",
    "completeness": "Required columns are never null and no object is empty.",
    "reconciliation": (
        "Row count, key sum, key checksum and money sums equal the source snapshot's, and S3 "
        "stores exactly the verified bytes (SHA-256) under the recorded version."
    ),
}


class ArchiveConfig(dg.Config):
    """Run configuration of an archive asset."""

    max_rows_per_object: int = Field(
        default=500_000, gt=0, description="Rows per archived Parquet object (a part)."
    )
    staging_dir: str | None = Field(
        default=None, description="Local folder for the parts before upload (default: a temp dir)."
    )


class PurgeConfig(dg.Config):
    """Run configuration of a purge asset."""

    batch_size: int = Field(
        default=5_000,
        gt=0,
        description="Archived parents deleted (with their children) per purge transaction.",
    )


def today() -> datetime:
    return datetime.now(UTC)


def _summary(result: ArchiveResult) -> str:
    lines = [
        f"**{result.month.label}**: {result.state}"
        + (f", round {result.round} (rows left after a purge)" if result.round else "")
        + (" (confirmed, not re-extracted)" if result.reused else ""),
        "",
        "| table | part | rows | bytes | storage class | object |",
        "|---|---:|---:|---:|---|---|",
    ]
    for entry in result.objects:
        lines.append(
            f"| {entry.table_name} | {entry.part} | {entry.row_count:,} | {entry.size_bytes:,} "
            f"| {entry.storage_class} | `s3://{entry.bucket}/{entry.object_key}` |"
        )
    for name, outcome in result.checks.items():
        lines.append("")
        lines.append(f"**{name}**: {'passed' if outcome.success else 'FAILED'}")
        if not outcome.success:
            lines.append(outcome.markdown())
    return "\n".join(lines)


def archive_metadata(result: ArchiveResult) -> dict[str, dg.MetadataValue]:
    """Asset metadata of an archive run (no personal data: keys, counts and URIs only)."""
    storage_classes = sorted({e.storage_class for e in result.objects})
    return {
        "state": dg.MetadataValue.text(result.state),
        "rows": dg.MetadataValue.int(result.source_rows),
        "round": dg.MetadataValue.int(result.round),
        # a row archived in two rounds (changed after the first's snapshot) counts in both
        "rows_archived_all_rounds": dg.MetadataValue.int(
            result.rows_before_round + result.source_rows
        ),
        "rows_all_tables": dg.MetadataValue.int(sum(e.row_count for e in result.objects)),
        "bytes": dg.MetadataValue.int(sum(e.size_bytes for e in result.objects)),
        "objects": dg.MetadataValue.int(len(result.objects)),
        "storage_class": dg.MetadataValue.text(", ".join(storage_classes) or "-"),
        "checksum_status": dg.MetadataValue.text(
            "verified"
            if result.passed and result.objects
            else ("n/a" if result.passed else "FAILED")
        ),
        "unlisted_objects": dg.MetadataValue.int(result.unlisted),
        "object_uris": dg.MetadataValue.json(
            [f"s3://{e.bucket}/{e.object_key}" for e in result.objects]
        ),
        "duration_seconds": dg.MetadataValue.float(round(result.seconds, 3)),
        "summary": dg.MetadataValue.md(_summary(result)),
    }


def build_month_assets(data_type: str, policy: DataTypePolicy) -> list[dg.AssetsDefinition]:
    """The archive and purge assets of one archived data type."""
    archive_key = dg.AssetKey(f"archive_{data_type}")
    purge_key = dg.AssetKey(f"purge_{data_type}")
    tables = ", ".join([policy.table, *(c.table for c in policy.children)])

    @dg.asset(
        key=archive_key,
        group_name="archive",
        partitions_def=ARCHIVE_PARTITIONS,
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
        kinds={"postgres", "s3", "parquet"},
        owners=["team:data-platform"],
        tags={"lifecycle/service": policy.service},
        description=(
            f"One month of {data_type} ({tables}) archived as zstd Parquet in the archive bucket "
            f"({policy.archive_storage_class}, SSE-KMS), personal columns encrypted per data "
            f"subject; eligible once older than {policy.active_window}."
        ),
        check_specs=[
            dg.AssetCheckSpec(
                name, asset=archive_key, blocking=True, description=CHECK_DESCRIPTIONS[name]
            )
            for name in CHECK_NAMES
        ],
    )
    def _archive(
        context: dg.AssetExecutionContext,
        config: ArchiveConfig,
        shop_db: PostgresResource,
        control_db: PostgresResource,
        s3: S3Resource,
    ) -> Iterator[dg.MaterializeResult]:
        month = check_partition(data_type, policy, context.partition_key, today().date())
        with retry_transient():
            result = MonthArchiver(
                data_type=data_type,
                policy=policy,
                month=month,
                shop=shop_db,
                control=control_db,
                s3=s3,
                max_rows_per_object=config.max_rows_per_object,
                staging_dir=None if config.staging_dir is None else Path(config.staging_dir),
                run_id=context.run.run_id,
                logger=context.log,
            ).run()
            if result.passed and result.schemas:
                registered = register_partition(
                    s3, data_type, policy, month.month, result.objects, result.schemas
                )
                context.log.info(f"registered in the Glue catalog: {', '.join(registered)}")
        yield dg.MaterializeResult(
            metadata=archive_metadata(result),
            check_results=[
                check_result(archive_key, name, result.checks.get(name), "no rows in this month")
                for name in CHECK_NAMES
            ],
        )

    @dg.asset(
        key=purge_key,
        deps=[archive_key],
        group_name="archive",
        partitions_def=ARCHIVE_PARTITIONS,
        backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
        kinds={"postgres"},
        owners=["team:data-platform"],
        tags={"lifecycle/service": policy.service},
        description=(
            f"Deletes the verified archived rows of one month of {data_type} from the source in "
            "bounded batches (children first); rows that changed or arrived after the snapshot "
            "stay, and the month's archive run archives them as a later round."
        ),
    )
    def _purge(
        context: dg.AssetExecutionContext,
        config: PurgeConfig,
        shop_db: PostgresResource,
        control_db: PostgresResource,
        s3: S3Resource,
    ) -> dg.MaterializeResult:
        month = check_partition(data_type, policy, context.partition_key, today().date())
        started = datetime.now(UTC)
        with retry_transient():
            done = purge_partition(
                shop=shop_db,
                control=control_db,
                s3=s3,
                data_type=data_type,
                policy=policy,
                month=month,
                batch_size=config.batch_size,
                logger=context.log,
            )
        seconds = (datetime.now(UTC) - started).total_seconds()
        if done.kept_rows:
            context.log.warning(
                f"{month.label}: {done.kept_rows} parent rows changed after the snapshot and "
                f"stay in the source; materializing archive_{data_type} for this month again "
                "archives them (and rows inserted into the month since) as its next round"
            )
        return dg.MaterializeResult(
            metadata={
                "round": dg.MetadataValue.int(done.round),
                "rows_deleted": dg.MetadataValue.int(done.deleted_rows),
                "parents_kept_changed_after_snapshot": dg.MetadataValue.int(done.kept_rows),
                "batches": dg.MetadataValue.int(done.batches),
                "duration_seconds": dg.MetadataValue.float(round(seconds, 3)),
            }
        )

    return [_archive, _purge]


def archive_month_assets() -> list[dg.AssetsDefinition]:
    """Archive and purge assets for every archived data type of the retention policy."""
    policy = load_policy()
    assets: list[dg.AssetsDefinition] = []
    for name, data_type in policy.archived_types().items():
        assets.extend(build_month_assets(name, data_type))
    return assets

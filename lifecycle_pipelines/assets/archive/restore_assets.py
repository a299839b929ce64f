"""Quarterly restore tests of the archive (spec 8.2), as two assets and a check.

`archive_restore_requests` samples archived objects and requests their Glacier restores (a
quarterly schedule materializes it); a sensor waits until every sampled object is readable and
then materializes `archive_restore_verification`, whose check compares the restored objects with
the manifest (SHA-256, then the GX suite with the manifest's figures).
"""

from typing import Literal

import dagster as dg
from pydantic import Field

from lifecycle_pipelines.archive.restore_test import (
    open_test,
    restore_progress,
    start_restore_test,
    verify_restore_test,
)
from lifecycle_pipelines.archive.scope import check_shapes
from lifecycle_pipelines.control import ensure_control_schema
from lifecycle_pipelines.errors import retry_transient
from lifecycle_pipelines.policy import load_policy
from lifecycle_pipelines.resources import PostgresResource, S3Resource

RESTORE_CHECK = "restored_sample_matches_manifest"


class RestoreRequestConfig(dg.Config):
    """How many objects to sample and how to restore them."""

    sample_size: int = Field(default=4, ge=1, description="Archived objects sampled per test.")
    restore_days: int = Field(
        default=2, ge=1, description="Days a restored copy stays readable (Glacier RestoreObject)."
    )
    tier: Literal["Expedited", "Standard", "Bulk"] = Field(
        default="Bulk", description="Glacier retrieval tier: Bulk is the cheapest and slowest."
    )


@dg.asset(
    group_name="archive",
    kinds={"s3", "glacier"},
    owners=["team:data-platform"],
    description=(
        "A quarterly sample of archived objects with Glacier restores requested (Bulk tier by "
        "default). An open test is reused instead of starting another."
    ),
)
def archive_restore_requests(
    context: dg.AssetExecutionContext,
    config: RestoreRequestConfig,
    control_db: PostgresResource,
    s3: S3Resource,
) -> dg.MaterializeResult:
    with retry_transient(), control_db.connect(autocommit=True) as conn:
        ensure_control_schema(conn)
        test_id, sample, started = start_restore_test(
            conn,
            s3.client("s3"),
            sample_size=config.sample_size,
            days=config.restore_days,
            tier=config.tier,
        )
    if test_id is None:
        context.log.warning("no archived objects yet: nothing to restore-test")
    uris = [f"s3://{s.entry.bucket}/{s.entry.object_key}" for s in sample]
    return dg.MaterializeResult(
        metadata={
            "test_id": dg.MetadataValue.int(test_id or 0),
            "started_now": dg.MetadataValue.bool(started),
            "objects": dg.MetadataValue.int(len(sample)),
            "object_uris": dg.MetadataValue.json(uris),
        }
    )


@dg.asset(
    deps=[archive_restore_requests],
    group_name="archive",
    kinds={"s3", "parquet"},
    owners=["team:data-platform"],
    description="The restored sample checked against the manifest (launched by a sensor).",
    check_specs=[
        dg.AssetCheckSpec(
            RESTORE_CHECK,
            asset="archive_restore_verification",
            description=(
                "Every restored object's SHA-256 equals the manifest's and its GX suite passes "
                "with the manifest's row count, key checksum and money sums."
            ),
        )
    ],
)
def archive_restore_verification(
    context: dg.AssetExecutionContext,
    shop_db: PostgresResource,
    control_db: PostgresResource,
    s3: S3Resource,
) -> dg.MaterializeResult:
    client = s3.client("s3")
    with retry_transient(), control_db.connect(autocommit=True) as conn:
        ensure_control_schema(conn)
        test_id = open_test(conn)
        if test_id is None:
            raise dg.Failure("no restore test is waiting; materialize archive_restore_requests")
        readable, total = restore_progress(conn, client, test_id)
        if readable < total:
            raise dg.Failure(
                f"restore test {test_id}: {readable}/{total} objects restored so far; "
                "the sensor launches this when all are readable"
            )
        policy = load_policy()
        with shop_db.connect() as shop:
            shapes = {
                (name, shape.table): shape
                for name, data_type in policy.archived_types().items()
                for shape in check_shapes(shop, name, data_type)
            }
        outcome = verify_restore_test(conn, client, test_id, shapes)
    context.log.info(
        f"restore test {test_id}: {outcome.passed_objects}/{outcome.objects} objects match"
    )
    result_md = "\n".join(f"- {line}" for line in outcome.failures) or "all objects match"
    return dg.MaterializeResult(
        metadata={
            "test_id": dg.MetadataValue.int(test_id),
            "objects": dg.MetadataValue.int(outcome.objects),
            "objects_passed": dg.MetadataValue.int(outcome.passed_objects),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=RESTORE_CHECK,
                passed=outcome.passed,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    "test_id": dg.MetadataValue.int(test_id),
                    "objects": dg.MetadataValue.int(outcome.objects),
                    "objects_passed": dg.MetadataValue.int(outcome.passed_objects),
                    "result": dg.MetadataValue.md(result_md),
                },
            )
        ],
    )

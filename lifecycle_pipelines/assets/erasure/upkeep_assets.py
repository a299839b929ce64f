"""Erasure upkeep: archive rewrites that waited for a restore, and the ledger replay after a
database or archive restore."""

import dagster as dg

from lifecycle_pipelines.archive.eraser import rewrite_pending
from lifecycle_pipelines.assets.erasure.erasers import open_stores
from lifecycle_pipelines.control import ensure_control_schema
from lifecycle_pipelines.errors import retry_transient
from lifecycle_pipelines.resources import DynamoDBResource, PostgresResource, S3Resource
from lifecycle_pipelines.resources.search import SearchResource
from lifecycle_pipelines.resources.warehouse import WarehouseResource


@dg.asset(
    group_name="erasure",
    kinds={"s3", "glacier"},
    owners=["team:privacy"],
    description=(
        "Archive objects planned for rewrite after an erasure: those readable now (a restore "
        "made them so) are rewritten without the erased subjects and their earlier versions "
        "deleted; plans of expired objects are closed. Runs daily."
    ),
)
def erasure_archive_rewrites(
    context: dg.AssetExecutionContext, control_db: PostgresResource, s3: S3Resource
) -> dg.MaterializeResult:
    with retry_transient(), control_db.connect(autocommit=True) as control:
        ensure_control_schema(control)
        counts = rewrite_pending(control, s3)
    context.log.info(
        f"archive rewrites: {counts['rewritten']} objects rewritten, {counts['waiting']} waiting "
        f"for a restore, {counts['expired']} expired"
    )
    return dg.MaterializeResult(
        metadata={
            "objects_rewritten": dg.MetadataValue.int(counts["rewritten"]),
            "rows_erased": dg.MetadataValue.int(counts["rows_erased"]),
            "objects_waiting_for_restore": dg.MetadataValue.int(counts["waiting"]),
            "plans_closed_by_expiry": dg.MetadataValue.int(counts["expired"]),
        }
    )


@dg.asset(
    group_name="erasure",
    kinds={"postgres", "dynamodb", "s3", "opensearch", "redshift"},
    owners=["team:privacy"],
    description=(
        "Re-applies the erasure ledger: materialize after any database, table or archive "
        "restore. Certificates a restored control database lost are recorded again from S3 "
        "first; then every finished request runs again, and whatever came back is erased and "
        "recorded."
    ),
)
def erasure_ledger_replay(
    context: dg.AssetExecutionContext,
    control_db: PostgresResource,
    shop_db: PostgresResource,
    s3: S3Resource,
    dynamodb: DynamoDBResource,
    search: SearchResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    with (
        retry_transient(),
        open_stores(
            control_db=control_db, shop_db=shop_db, s3=s3, dynamodb=dynamodb, search=search,
            warehouse=warehouse,
        ) as stores,
    ):  # fmt: skip
        ensure_control_schema(stores.control)
        report, rewrites = stores.replay()
    if report.recovered:
        context.log.warning(
            f"ledger replay: {len(report.recovered)} certificates the control database had lost "
            f"(sequences {report.recovered[0].sequence}-{report.recovered[-1].sequence}) were "
            "recorded again from S3; their subjects were erased again"
        )
    context.log.info(
        f"ledger replay: {report.requests} requests re-applied, {report.total} items erased again"
    )
    lines = ["| store | erased again |", "|---|---:|"]
    lines += [f"| {store} | {n} |" for store, n in sorted(report.reerased.items())]
    return dg.MaterializeResult(
        metadata={
            "certificates_recovered": dg.MetadataValue.int(len(report.recovered)),
            "requests_replayed": dg.MetadataValue.int(report.requests),
            "items_erased_again": dg.MetadataValue.int(report.total),
            "archive_objects_rewritten": dg.MetadataValue.int(rewrites["rewritten"]),
            "summary": dg.MetadataValue.md("\n".join(lines)),
        }
    )

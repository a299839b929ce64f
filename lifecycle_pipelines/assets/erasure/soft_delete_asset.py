"""`erasure_soft_delete`: one dynamic partition per erasure request (created by the request
sensor); masks the subject in PostgreSQL and removes their DynamoDB items at once."""

import dagster as dg

from lifecycle_pipelines.control import ensure_control_schema
from lifecycle_pipelines.erasure.requests import status
from lifecycle_pipelines.erasure.soft_delete import (
    StoreResult,
    record,
    search_result,
    soft_delete_dynamodb,
    soft_delete_postgres,
)
from lifecycle_pipelines.errors import retry_transient
from lifecycle_pipelines.resources import DynamoDBResource, PostgresResource

ERASURE_PARTITIONS = dg.DynamicPartitionsDefinition(name="erasure_requests")


def _metadata(
    request_id: int, results: list[StoreResult], dry_run: bool, state: str
) -> dict[str, dg.MetadataValue]:
    lines = ["| store | found | changed | note |", "|---|---:|---:|---|"]
    lines += [f"| {r.store} | {r.found} | {r.changed} | {r.note} |" for r in results]
    return {
        "request_id": dg.MetadataValue.int(request_id),
        "dry_run": dg.MetadataValue.bool(dry_run),
        "state": dg.MetadataValue.text(state),
        "rows_changed": dg.MetadataValue.int(sum(r.changed for r in results)),
        "summary": dg.MetadataValue.md("\n".join(lines)),
    }


@dg.asset(
    group_name="erasure",
    partitions_def=ERASURE_PARTITIONS,
    kinds={"postgres", "dynamodb"},
    owners=["team:privacy"],
    description=(
        "Soft delete of one erasure request's subject: user marked deleted and personal fields "
        "masked in PostgreSQL, sessions and preferences removed from DynamoDB, each store's "
        "counts in the erasure ledger (a dry run only counts)."
    ),
)
def erasure_soft_delete(
    context: dg.AssetExecutionContext,
    shop_db: PostgresResource,
    control_db: PostgresResource,
    dynamodb: DynamoDBResource,
) -> dg.MaterializeResult:
    try:
        request_id = int(context.partition_key)
    except ValueError:
        raise dg.Failure(
            f"partition_key: not an erasure request id: {context.partition_key!r}"
        ) from None
    with retry_transient(), control_db.connect(autocommit=True) as control:
        ensure_control_schema(control)
        request = status(control, request_id)
        if request is None:
            raise dg.Failure(f"partition_key: no erasure request {request_id}; nothing changed")
        if request.merged_into is not None or request.state == "no_data_found":
            note = (
                f"merged into request {request.merged_into}"
                if request.merged_into is not None
                else "no data found for this subject"
            )
            return dg.MaterializeResult(
                metadata={
                    **_metadata(request_id, [], request.dry_run, request.state),
                    "note": dg.MetadataValue.text(note),
                }
            )
        with shop_db.connect(autocommit=True) as shop:
            results = soft_delete_postgres(shop, request.subject_id, dry_run=request.dry_run)
        results += soft_delete_dynamodb(
            dynamodb.table("Sessions"),
            dynamodb.table("UserPreferences"),
            request.subject_id,
            dry_run=request.dry_run,
        )
        results.append(search_result())
        record(control, request_id, results, dry_run=request.dry_run)
        final = status(control, request_id)
    context.log.info(f"erasure request {request_id}: soft delete done ({len(results)} stores)")
    return dg.MaterializeResult(
        metadata=_metadata(request_id, results, request.dry_run, final.state if final else "?")
    )

"""`erasure_soft_delete`: one dynamic partition per erasure request (created by the request
sensor); masks the subject in PostgreSQL and removes their DynamoDB items at once.

A dry-run request changes nothing: it reports what the soft delete and the later hard delete
would find and change in every store (the same plan a real request follows). A request for a
subject the shop does not know (`no_data_found` at intake; launched by the request sensor)
completes with a 'no data found' certificate once every store confirmed it holds nothing. When
a store does hold data under that id, the run fails naming the stores and counts, changes
nothing, and is tagged for a person's review (not launched again): the id may be wrong, or have
been given to someone else since (ids are handed out later), so the pipeline never erases under
an id the shop did not know.
"""

from functools import partial

import dagster as dg

from lifecycle_pipelines.assets.erasure.erasers import open_stores
from lifecycle_pipelines.control import ensure_control_schema
from lifecycle_pipelines.erasure import certificate
from lifecycle_pipelines.erasure.hard_delete import hard_delete
from lifecycle_pipelines.erasure.requests import status
from lifecycle_pipelines.erasure.soft_delete import mark_soft_deleted, record_store
from lifecycle_pipelines.erasure.stores import StoreResult, results_table
from lifecycle_pipelines.errors import retry_transient
from lifecycle_pipelines.resources import DynamoDBResource, PostgresResource, S3Resource
from lifecycle_pipelines.resources.search import SearchResource
from lifecycle_pipelines.resources.warehouse import WarehouseResource

ERASURE_PARTITIONS = dg.DynamicPartitionsDefinition(name="erasure_requests")
# on a run that failed for a person's review: the request sensor does not launch it again
REVIEW_TAG = "lifecycle/erasure_review"


def _metadata(
    request_id: int, results: list[StoreResult], dry_run: bool, state: str
) -> dict[str, dg.MetadataValue]:
    return {
        "request_id": dg.MetadataValue.int(request_id),
        "dry_run": dg.MetadataValue.bool(dry_run),
        "state": dg.MetadataValue.text(state),
        "rows_changed": dg.MetadataValue.int(sum(r.changed for r in results)),
        "summary": dg.MetadataValue.md(results_table(results)),
    }


@dg.asset(
    group_name="erasure",
    partitions_def=ERASURE_PARTITIONS,
    kinds={"postgres", "dynamodb"},
    owners=["team:privacy"],
    description=(
        "Soft delete of one erasure request's subject: user marked deleted and personal fields "
        "masked in PostgreSQL, sessions and preferences removed from DynamoDB, each store's "
        "counts in the erasure ledger. A dry run changes nothing and reports the soft and hard "
        "delete plan; a subject unknown to the shop gets a 'no data found' certificate, or a "
        "failed run for review where stores hold data under its id."
    ),
)
def erasure_soft_delete(
    context: dg.AssetExecutionContext,
    shop_db: PostgresResource,
    control_db: PostgresResource,
    s3: S3Resource,
    dynamodb: DynamoDBResource,
    search: SearchResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    try:
        request_id = int(context.partition_key)
    except ValueError:
        raise dg.Failure(
            f"partition_key: not an erasure request id: {context.partition_key!r}"
        ) from None
    with (
        retry_transient(),
        open_stores(
            control_db=control_db, shop_db=shop_db, s3=s3, dynamodb=dynamodb, search=search,
            warehouse=warehouse,
        ) as stores,
    ):  # fmt: skip
        control = stores.control
        ensure_control_schema(control)
        request = status(control, request_id)
        if request is None:
            raise dg.Failure(f"partition_key: no erasure request {request_id}; nothing changed")
        if request.merged_into is not None:
            return dg.MaterializeResult(
                metadata={
                    **_metadata(request_id, [], request.dry_run, request.state),
                    "note": dg.MetadataValue.text(f"merged into request {request.merged_into}"),
                }
            )
        subject = stores.subject(request)
        if request.state == "no_data_found":
            erasers = stores.erasers(request)
            remaining = [r for e in erasers for r in e.remaining(subject)]
            held = [r for r in remaining if r.count]
            if held and not request.dry_run:
                listed = ", ".join(f"{r.store} ({r.count})" for r in held)
                why = "data under an id unknown to the shop at intake"
                context.instance.add_run_tags(context.run_id, {REVIEW_TAG: why})
                raise dg.Failure(
                    f"erasure request {request_id}: the shop did not know the subject at intake, "
                    f"but {listed} hold data under its id; nothing changed; review the request "
                    "(the id may be wrong, or belong to someone else since)"
                )
            found = [StoreResult(r.store, r.count, 0, r.note) for r in remaining]
            cert = None
            if not held and not request.dry_run:
                cert = stores.issue_certificate(
                    certificate.certificate_document(
                        control,
                        request_id,
                        subject_pseudonym=subject.user_key,
                        outcome="no data found",
                        remaining=remaining,
                    )
                )
            metadata = _metadata(request_id, found, request.dry_run, request.state)
            if cert is not None:
                metadata["certificate_uri"] = dg.MetadataValue.url(cert.uri)
                metadata["certificate_sha256"] = dg.MetadataValue.text(cert.sha256)
            return dg.MaterializeResult(metadata=metadata)
        results = stores.soft_delete(
            request,
            dry_run=request.dry_run,
            on_store=partial(record_store, control, request_id, dry_run=request.dry_run),
        )
        if not request.dry_run:
            mark_soft_deleted(control, request_id)
        metadata = _metadata(request_id, results, request.dry_run, request.state)
        if request.dry_run:
            plan = hard_delete(
                control,
                request,
                subject,
                stores.erasers(request),
                issue_certificate=stores.issue_certificate,
            )
            metadata["hard_delete_plan"] = dg.MetadataValue.md(results_table(plan.results))
            metadata["hard_delete_items"] = dg.MetadataValue.int(sum(r.found for r in plan.results))
        final = status(control, request_id)
    context.log.info(f"erasure request {request_id}: soft delete done ({len(results)} stores)")
    metadata["state"] = dg.MetadataValue.text(final.state if final else "?")
    return dg.MaterializeResult(metadata=metadata)

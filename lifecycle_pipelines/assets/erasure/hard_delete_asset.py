"""`erasure_hard_delete`: the hard delete of one request after its grace period, with its
certificate, and the check `subject_absent_everywhere` that asks every store what remains."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg

from lifecycle_pipelines.assets.erasure.erasers import open_stores
from lifecycle_pipelines.assets.erasure.soft_delete_asset import ERASURE_PARTITIONS
from lifecycle_pipelines.control import ensure_control_schema
from lifecycle_pipelines.erasure.hard_delete import (
    DataRemains,
    HardDeleteOutcome,
    NotDue,
    check_due,
    hard_delete,
)
from lifecycle_pipelines.erasure.requests import status
from lifecycle_pipelines.erasure.stores import Remaining, results_table
from lifecycle_pipelines.errors import retry_transient
from lifecycle_pipelines.policy import Duration, load_policy
from lifecycle_pipelines.resources import DynamoDBResource, PostgresResource, S3Resource
from lifecycle_pipelines.resources.search import SearchResource
from lifecycle_pipelines.resources.warehouse import WarehouseResource

ABSENT_CHECK = "subject_absent_everywhere"


def grace_period() -> timedelta:
    """The policy's grace period between soft and hard delete."""
    return timedelta(days=Duration.parse(load_policy().erasure.grace_period).approx_days())


def request_id_of(partition_key: str) -> int:
    """The request id of a partition key; dg.Failure names the key otherwise."""
    try:
        return int(partition_key)
    except ValueError:
        raise dg.Failure(f"partition_key: not an erasure request id: {partition_key!r}") from None


def _remaining_table(remaining: list[Remaining]) -> str:
    lines = ["| store | remaining |", "|---|---:|"]
    lines += [f"| {r.store} | {r.count} |" for r in remaining]
    return "\n".join(lines)


def hard_delete_metadata(outcome: HardDeleteOutcome) -> dict[str, dg.MetadataValue]:
    """Asset metadata of a hard-delete run: counts, the verification and the certificate."""
    parts = [f"**Request {outcome.request_id}: {outcome.state}**"]
    if outcome.holds:
        # a hold's reason is the legal team's free text (it may name people): ids and scopes
        # only here; `lifecycle erasure status` shows the reason to the privacy team
        parts.append(
            "Deferred by legal hold: "
            + "; ".join(f"hold {h.hold_id} on {h.scope}" for h in outcome.holds)
        )
    if outcome.results:
        parts.append(results_table(outcome.results))
    if outcome.remaining:
        parts.append("Verification after erasure:\n\n" + _remaining_table(outcome.remaining))
    metadata: dict[str, dg.MetadataValue] = {
        "request_id": dg.MetadataValue.int(outcome.request_id),
        "state": dg.MetadataValue.text(outcome.state),
        "dry_run": dg.MetadataValue.bool(outcome.dry_run),
        "items_found": dg.MetadataValue.int(sum(r.found for r in outcome.results)),
        "items_changed": dg.MetadataValue.int(sum(r.changed for r in outcome.results)),
        "stores_checked": dg.MetadataValue.int(len({r.store for r in outcome.results})),
    }
    cert = outcome.certificate
    if cert is not None:
        parts.append(f"Certificate {cert.sequence}: `{cert.uri}` (SHA-256 `{cert.sha256}`)")
        metadata["certificate_uri"] = dg.MetadataValue.url(cert.uri)
        metadata["certificate_sha256"] = dg.MetadataValue.text(cert.sha256)
        metadata["certificate_sequence"] = dg.MetadataValue.int(cert.sequence)
    metadata["summary"] = dg.MetadataValue.md("\n\n".join(parts))
    return metadata


@dg.asset(
    group_name="erasure",
    partitions_def=ERASURE_PARTITIONS,
    deps=["erasure_soft_delete"],
    kinds={"postgres", "dynamodb", "s3", "opensearch", "redshift"},
    owners=["team:privacy"],
    check_specs=[
        dg.AssetCheckSpec(
            ABSENT_CHECK,
            asset="erasure_hard_delete",
            description="Every store is asked for the subject: fails if any personal data remains.",
        )
    ],
    description=(
        "Hard delete of one erasure request after the policy's grace period: the subject's "
        "archive key destroyed and affected objects planned for rewrite, PostgreSQL rows "
        "deleted or anonymised (orders kept for retention), DynamoDB items, every monthly "
        "search index and the warehouse cleaned; a hash-chained certificate under Object Lock. "
        "A legal hold defers it; the daily sweep launches due requests."
    ),
)
def erasure_hard_delete(
    context: dg.AssetExecutionContext,
    control_db: PostgresResource,
    shop_db: PostgresResource,
    s3: S3Resource,
    dynamodb: DynamoDBResource,
    search: SearchResource,
    warehouse: WarehouseResource,
) -> Iterator[dg.Output[None] | dg.AssetCheckResult]:
    request_id = request_id_of(context.partition_key)
    with (
        retry_transient(),
        open_stores(
            control_db=control_db, shop_db=shop_db, s3=s3, dynamodb=dynamodb, search=search,
            warehouse=warehouse,
        ) as stores,
    ):  # fmt: skip
        ensure_control_schema(stores.control)
        try:
            request = check_due(
                status(stores.control, request_id), grace_period(), datetime.now(UTC)
            )
        except NotDue as err:
            raise dg.Failure(str(err)) from None
        subject = stores.subject(request)
        try:
            outcome = hard_delete(
                stores.control,
                request,
                subject,
                stores.erasers(request),
                issue_certificate=stores.issue_certificate,
            )
        except DataRemains as err:
            raise dg.Failure(str(err)) from None
        context.log.info(f"erasure request {request_id}: {outcome.state}")
        remaining = outcome.remaining
    yield dg.Output(None, metadata=hard_delete_metadata(outcome))
    if outcome.state != "hard_deleted":
        # deferred (a legal hold): nothing was erased, so nothing is proven. Dagster wants a
        # result for every declared check: not passed, at WARN (a hold is not an error)
        yield dg.AssetCheckResult(
            check_name=ABSENT_CHECK,
            passed=False,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"result": dg.MetadataValue.text(f"not evaluated: {outcome.state}")},
        )
        return
    left = [r for r in remaining if r.count]
    yield dg.AssetCheckResult(
        check_name=ABSENT_CHECK,
        passed=not left,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "stores_checked": dg.MetadataValue.int(len(remaining)),
            "stores_with_data": dg.MetadataValue.int(len(left)),
            "result": dg.MetadataValue.md(_remaining_table(remaining)),
        },
    )

"""Erasure sensors and schedules: new requests become partitions and soft-delete runs at once;
a daily sweep launches the hard delete of every request whose grace period has passed (and of
held ones, whose hold may have been lifted); archive rewrites are retried daily."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from lifecycle_pipelines.assets.erasure import ERASURE_PARTITIONS
from lifecycle_pipelines.assets.erasure.hard_delete_asset import grace_period
from lifecycle_pipelines.assets.erasure.soft_delete_asset import REVIEW_TAG
from lifecycle_pipelines.control import ensure_control_schema
from lifecycle_pipelines.erasure.hard_delete import due_requests
from lifecycle_pipelines.resources import PostgresResource
from lifecycle_pipelines.schedules import asset_schedule

erasure_job = dg.define_asset_job(
    "erasure_soft_delete_job",
    selection=dg.AssetSelection.assets("erasure_soft_delete"),
    partitions_def=ERASURE_PARTITIONS,
    description="Soft delete one erasure request's subject in every store.",
)
erasure_hard_delete_job = dg.define_asset_job(
    "erasure_hard_delete_job",
    selection=dg.AssetSelection.assets("erasure_hard_delete"),
    partitions_def=ERASURE_PARTITIONS,
    description="Hard delete one erasure request's subject after its grace period.",
)
erasure_rewrites_job, erasure_rewrites_daily = asset_schedule(
    "erasure_archive_rewrites",
    "erasure_archive_rewrites_job",
    "erasure_archive_rewrites_daily",
    "30 3 * * *",
    "Rewrite archive objects that became readable since an erasure planned them.",
)


# A soft delete whose run failed is launched again this long after the failure (a new run key
# per failed run): a request is never left half-done because one run hit a store's error.
SOFT_DELETE_RETRY_AFTER = timedelta(minutes=15)
_PENDING_REQUESTS = """
SELECT r.request_id FROM lifecycle.erasure_requests r
 WHERE r.merged_into IS NULL
   AND (r.state = 'received'
        OR (r.state = 'no_data_found' AND NOT r.dry_run AND NOT EXISTS (
            SELECT 1 FROM lifecycle.erasure_certificates c WHERE c.request_id = r.request_id)))
   AND NOT (r.dry_run AND EXISTS (
       SELECT 1 FROM lifecycle.erasure_ledger l
        WHERE l.request_id = r.request_id AND l.store <> 'intake'))
 ORDER BY r.request_id <= %(after)s, r.request_id LIMIT %(page)s
"""
PENDING_PAGE = 100  # requests considered per tick; the page turns, so none is starved


def _soft_delete_run_request(
    context: dg.SensorEvaluationContext, key: str, now: datetime
) -> dg.RunRequest | None:
    """The run to launch for a pending request: the first one, or a retry after a failed run
    (once per failed run, after `SOFT_DELETE_RETRY_AFTER`); None while a run is under way or
    was just launched, or when the last run failed for a person's review (`REVIEW_TAG`)."""
    records = context.instance.get_run_records(
        filters=dg.RunsFilter(job_name=erasure_job.name, tags={"dagster/partition": key}),
        limit=1,
    )
    if not records:
        return dg.RunRequest(partition_key=key, run_key=f"erasure-{key}")
    last = records[0]
    if REVIEW_TAG in last.dagster_run.tags:
        return None
    if last.dagster_run.status not in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED):
        return None
    if now - last.update_timestamp.astimezone(UTC) < SOFT_DELETE_RETRY_AFTER:
        return None
    context.log.warning(
        f"erasure request {key}: soft delete run {last.dagster_run.run_id} failed; retrying"
    )
    return dg.RunRequest(
        partition_key=key, run_key=f"erasure-{key}-after-{last.dagster_run.run_id}"
    )


@dg.sensor(
    job=erasure_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Turns erasure requests not yet soft-deleted into partitions and launches their soft "
        "delete; launches it again after a failed run."
    ),
)
def erasure_request_sensor(
    context: dg.SensorEvaluationContext, control_db: PostgresResource
) -> dg.SensorResult | dg.SkipReason:
    """Every request still `received`, or `no_data_found` without its certificate (the other
    stores must confirm it), is considered, rather than only the ids above a cursor: a request
    whose insert commits after a later one's is not skipped, and one whose soft delete failed
    is retried, unless it failed for a person's review. A tick reads at most `PENDING_PAGE` of
    them, those after the last one the previous tick read first (the cursor), wrapping around:
    many requests whose runs keep failing cannot starve a newer one."""
    cursor = context.cursor or ""
    after = int(cursor) if cursor.isdigit() else 0
    with control_db.connect(autocommit=True) as conn:
        ensure_control_schema(conn)
        rows = conn.execute(_PENDING_REQUESTS, {"after": after, "page": PENDING_PAGE}).fetchall()
    keys = [str(r[0]) for r in rows]
    context.update_cursor(keys[-1] if len(keys) == PENDING_PAGE else "0")
    known = set(context.instance.get_dynamic_partitions(str(ERASURE_PARTITIONS.name)))
    new = [k for k in keys if k not in known]
    now = datetime.now(UTC)
    requests = [r for k in keys if (r := _soft_delete_run_request(context, k, now)) is not None]
    if not requests and not new:
        return dg.SkipReason("no erasure request waits for its soft delete")
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[ERASURE_PARTITIONS.build_add_request(new)] if new else [],
    )


@dg.schedule(
    job=erasure_hard_delete_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily sweep: hard delete every erasure request past its grace period.",
)
def erasure_hard_delete_sweep(
    context: dg.ScheduleEvaluationContext, control_db: PostgresResource
) -> list[dg.RunRequest] | dg.SkipReason:
    now = context.scheduled_execution_time or datetime.now(UTC)
    with control_db.connect(autocommit=True) as conn:
        ensure_control_schema(conn)
        due = due_requests(conn, grace_period(), now)
    if not due:
        return dg.SkipReason("no erasure request is past its grace period")
    day = f"{now:%Y-%m-%d}"
    return [
        dg.RunRequest(partition_key=str(r.request_id), run_key=f"erasure-hard-{r.request_id}-{day}")
        for r in due
    ]

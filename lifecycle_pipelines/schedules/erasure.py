"""Erasure sensors and schedules: new requests become partitions and soft-delete runs at once;
a daily sweep launches the hard delete of every request whose grace period has passed (and of
held ones, whose hold may have been lifted); archive rewrites are retried daily."""

from datetime import UTC, datetime

import dagster as dg

from lifecycle_pipelines.assets.erasure import ERASURE_PARTITIONS
from lifecycle_pipelines.assets.erasure.hard_delete_asset import grace_period
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


@dg.sensor(
    job=erasure_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Turns new erasure requests into partitions and launches their soft delete.",
)
def erasure_request_sensor(
    context: dg.SensorEvaluationContext, control_db: PostgresResource
) -> dg.SensorResult | dg.SkipReason:
    after = int(context.cursor or 0)
    with control_db.connect(autocommit=True) as conn:
        ensure_control_schema(conn)
        rows = conn.execute(
            "SELECT request_id FROM lifecycle.erasure_requests WHERE request_id > %s"
            " ORDER BY request_id LIMIT 100",
            (after,),
        ).fetchall()
    if not rows:
        return dg.SkipReason("no new erasure requests")
    keys = [str(r[0]) for r in rows]
    return dg.SensorResult(
        run_requests=[dg.RunRequest(partition_key=k, run_key=f"erasure-{k}") for k in keys],
        dynamic_partitions_requests=[ERASURE_PARTITIONS.build_add_request(keys)],
        cursor=keys[-1],
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

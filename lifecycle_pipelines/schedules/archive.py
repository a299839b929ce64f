"""Archive schedules and sensors: per archived data type a monthly schedule running the newest
month that has just left the policy's active window (archive, verify, then purge, in one run)
and a daily sensor running the next round of purged months that still have rows in the source;
the quarterly restore test and the sensor that completes it."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from lifecycle_pipelines.archive.plan import ArchiveMonth, newest_eligible_month
from lifecycle_pipelines.archive.restore_test import open_test, restore_progress
from lifecycle_pipelines.archive.scope import check_shapes, parent_key_range
from lifecycle_pipelines.assets.archive import ARCHIVE_PARTITIONS
from lifecycle_pipelines.control import ensure_control_schema
from lifecycle_pipelines.policy import DataTypePolicy, load_policy
from lifecycle_pipelines.resources import PostgresResource, S3Resource
from lifecycle_pipelines.schedules import asset_schedule


def archive_job(data_type: str) -> dg.UnresolvedAssetJobDefinition:
    """Archive then purge one month of `data_type` (a partition per run)."""
    return dg.define_asset_job(
        f"archive_{data_type}_job",
        selection=dg.AssetSelection.assets(f"archive_{data_type}", f"purge_{data_type}"),
        partitions_def=ARCHIVE_PARTITIONS,
        description=f"Archive, verify and purge one month of {data_type}.",
    )


def month_run(data_type: str, key: str, run_key: str) -> dg.RunRequest:
    """A run of the archive job for one month (partition `key`), tagged with it."""
    return dg.RunRequest(
        run_key=run_key,
        partition_key=key,
        tags={"lifecycle/archive-partition": f"{data_type}:{key}"},
    )


def archive_schedule(
    data_type: str, policy: DataTypePolicy, job: dg.UnresolvedAssetJobDefinition
) -> dg.ScheduleDefinition:
    """On the 2nd of each month at 03:00 UTC, run the month that just became eligible."""

    @dg.schedule(
        name=f"archive_{data_type}_monthly",
        job=job,
        cron_schedule="0 3 2 * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            f"Archives the newest month of {data_type} older than {policy.active_window}."
        ),
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        when = context.scheduled_execution_time
        month = newest_eligible_month(policy, when.date())
        key = month.isoformat()
        return month_run(data_type, key, f"archive:{data_type}:{key}")

    return _schedule


def late_rows_sensor(
    data_type: str, policy: DataTypePolicy, job: dg.UnresolvedAssetJobDefinition
) -> dg.SensorDefinition:
    """Once a day, a run of the next round for every purged month of `data_type` that still has
    rows in the source (changed after its snapshot, so kept by the purge, or inserted into the
    month since), and again for a late round left `written` (its run failed). Run keys carry the
    day: a run that failed is asked for again the next day, never twice in one."""

    @dg.sensor(
        name=f"archive_{data_type}_late_rows",
        job=job,
        minimum_interval_seconds=24 * 3600,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Archives, as a later round, rows of {data_type} left in purged months (changed or "
            "inserted after the month's snapshot)."
        ),
    )
    def _sensor(
        context: dg.SensorEvaluationContext, control_db: PostgresResource, shop_db: PostgresResource
    ) -> dg.SensorResult | dg.SkipReason:
        with control_db.connect(autocommit=True) as control:
            ensure_control_schema(control)
            purged = control.execute(
                "SELECT partition_month, round, state FROM lifecycle.archive_partitions"
                " WHERE data_type = %s AND (state = 'purged' OR (state = 'written' AND round > 0))"
                " ORDER BY partition_month",
                (data_type,),
            ).fetchall()
        if not purged:
            return dg.SkipReason(f"no purged month of {data_type}")
        day = f"{datetime.now(UTC):%Y-%m-%d}"
        requests = []
        with shop_db.connect() as shop:
            parent = check_shapes(shop, data_type, policy)[0]
            for month, round_, state in purged:
                if state == "purged":
                    if parent_key_range(shop, parent, ArchiveMonth(data_type, month)) is None:
                        continue
                    round_ += 1
                key = month.isoformat()
                run_key = f"archive-late:{data_type}:{key}:round-{round_}:{day}"
                requests.append(month_run(data_type, key, run_key))
        if not requests:
            return dg.SkipReason(f"no rows left in the {len(purged)} purged months of {data_type}")
        return dg.SensorResult(run_requests=requests)

    return _sensor


def archive_jobs_and_schedules() -> tuple[
    list[dg.UnresolvedAssetJobDefinition], list[dg.ScheduleDefinition], list[dg.SensorDefinition]
]:
    """A job, a monthly schedule and a late-rows sensor for every archived data type of the
    retention policy."""
    jobs, schedules, sensors = [], [], []
    for name, data_type in load_policy().archived_types().items():
        job = archive_job(name)
        jobs.append(job)
        schedules.append(archive_schedule(name, data_type, job))
        sensors.append(late_rows_sensor(name, data_type, job))
    return jobs, schedules, sensors


restore_request_job, archive_restore_quarterly = asset_schedule(
    "archive_restore_requests",
    "archive_restore_request_job",
    "archive_restore_quarterly",
    "0 4 1 1,4,7,10 *",
    "Quarterly sample restore test of the archive (spec 8.2): sample and request restores.",
)
restore_verification_job = dg.define_asset_job(
    "archive_restore_verification_job",
    selection=dg.AssetSelection.assets("archive_restore_verification"),
    description="Check a completed restore test against the manifest.",
)


@dg.sensor(
    job=restore_verification_job,
    minimum_interval_seconds=900,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches the restore verification once every sampled object is restored.",
)
def archive_restore_sensor(
    context: dg.SensorEvaluationContext, control_db: PostgresResource, s3: S3Resource
) -> dg.SensorResult | dg.SkipReason:
    with control_db.connect(autocommit=True) as conn:
        ensure_control_schema(conn)
        test_id = open_test(conn)
        if test_id is None:
            return dg.SkipReason("no restore test is waiting")
        readable, total = restore_progress(conn, s3.client("s3"), test_id)
    if readable < total:
        return dg.SkipReason(f"restore test {test_id}: {readable}/{total} objects restored")
    return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"restore-test-{test_id}")])


retention_expiry_job, archive_retention_expiry_daily = asset_schedule(
    "archive_retention_expiry",
    "archive_retention_expiry_job",
    "archive_retention_expiry_daily",
    "30 5 * * *",
    "Delete archives past their retention period, unless object lock holds them.",
)

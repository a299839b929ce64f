"""The monthly archive schedules: one per archived data type, each running the newest month that
has just left the policy's active window (archive, verify, then purge, in one run)."""

from __future__ import annotations

import dagster as dg

from lifecycle_pipelines.archive.plan import newest_eligible_month
from lifecycle_pipelines.assets.archive import ARCHIVE_PARTITIONS
from lifecycle_pipelines.policy import DataTypePolicy, load_policy


def archive_job(data_type: str) -> dg.UnresolvedAssetJobDefinition:
    """Archive then purge one month of `data_type` (a partition per run)."""
    return dg.define_asset_job(
        f"archive_{data_type}_job",
        selection=dg.AssetSelection.assets(f"archive_{data_type}", f"purge_{data_type}"),
        partitions_def=ARCHIVE_PARTITIONS,
        description=f"Archive, verify and purge one month of {data_type}.",
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
        return dg.RunRequest(
            run_key=f"archive:{data_type}:{key}",
            partition_key=key,
            tags={"lifecycle/archive-partition": f"{data_type}:{key}"},
        )

    return _schedule


def archive_jobs_and_schedules() -> tuple[
    list[dg.UnresolvedAssetJobDefinition], list[dg.ScheduleDefinition]
]:
    """A job and a monthly schedule for every archived data type of the retention policy."""
    jobs, schedules = [], []
    for name, data_type in load_policy().archived_types().items():
        job = archive_job(name)
        jobs.append(job)
        schedules.append(archive_schedule(name, data_type, job))
    return jobs, schedules

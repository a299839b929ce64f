"""The sensor that tells the operators' SNS topic (`AlertsResource`) what went wrong: every run of
this code location that failed for good, and every asset check that did not pass in it (spec
9.3: notification on data-quality issues).

It reads finished runs from run storage and each run's check evaluations from its event log.
A run counts once, by the time it finished (`end_time`, which later tag changes do not move):
the cursor keeps the latest end time seen and the runs that ended in the `LOOKBACK` before it,
and every tick reads the runs that ended since then. A run whose end is written late (another
run worker's clock, a slow write) is still found within `LOOKBACK`; one already alerted is not
alerted again. The first tick starts at that moment: earlier failures are not announced.

A run that Dagster will retry (tag `dagster/will_retry=true`) is not alerted: its last attempt
is. Only runs of this code location are alerted (the run's origin names it; without an origin,
a run whose job this location defines).

With no topic configured (`LIFECYCLE_ALERTS_TOPIC_ARN` unset) an alert is written to the log
instead. SNS calls are retried by the client (standard mode). When SNS is still unreachable or
throttling, the tick ends before the run is marked seen and the next tick sends its alerts again
(an alert may arrive twice, never not at all); an alert SNS rejects for good (an invalid
parameter, a missing topic) is logged as an error and passed over, so it cannot hold back the
ones after it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import dagster as dg
from botocore.exceptions import BotoCoreError, ClientError
from dagster import DagsterEventType

from lifecycle_pipelines.alerts.messages import PARTITION_TAG, Alert, check_failed, run_failed
from lifecycle_pipelines.resources import AlertsResource

LOOKBACK = timedelta(minutes=10)  # how late a run's end may be written and still be alerted
RUNS_PER_TICK = 500  # runs read per tick (more than this ending within LOOKBACK: the rest wait)
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
WILL_RETRY_TAG = "dagster/will_retry"
# SNS errors worth another tick (the client's own retries were spent); any other is for good
TRANSIENT_SNS_CODES = frozenset(
    {"Throttling", "ThrottlingException", "ThrottledException", "InternalError",
     "InternalFailure", "ServiceUnavailable", "KMSThrottlingException"}
)  # fmt: skip


@dataclass
class RunCursor:
    """The latest end time seen, and the runs seen that ended in the `LOOKBACK` before it."""

    latest: datetime
    seen: dict[str, float] = field(default_factory=dict)  # run id -> end time (epoch seconds)

    @classmethod
    def parse(cls, text: str) -> RunCursor:
        value = json.loads(text)
        return cls(datetime.fromisoformat(value["latest"]), dict(value["seen"]))

    def dump(self) -> str:
        return json.dumps({"latest": self.latest.isoformat(), "seen": self.seen})

    @property
    def since(self) -> datetime:
        return self.latest - LOOKBACK

    def is_new(self, record: dg.RunRecord) -> bool:
        ended = record.end_time
        return (
            ended is not None
            and ended > self.since.timestamp()
            and record.dagster_run.run_id not in self.seen
        )

    def mark(self, record: dg.RunRecord) -> None:
        ended = record.end_time or self.latest.timestamp()
        self.seen[record.dagster_run.run_id] = ended
        self.latest = max(self.latest, datetime.fromtimestamp(ended, UTC))
        floor = self.since.timestamp()
        self.seen = {run_id: end for run_id, end in self.seen.items() if end > floor}


def alerts_of_run(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[Alert]:
    """The run's own alert when it failed, then one per check evaluation that did not pass (an
    evaluation without a partition of its own is the run's partition's)."""
    found = []
    if run.status == dg.DagsterRunStatus.FAILURE:
        failures = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE)
        classes = []
        for entry in failures:
            error = entry.dagster_event.step_failure_data.error if entry.dagster_event else None
            while error is not None and error.cause is not None:  # the user code's own error
                error = error.cause
            if error is not None and error.cls_name:
                classes.append(error.cls_name)
        found.append(
            run_failed(
                job=run.job_name,
                run_id=run.run_id,
                tags=run.tags,
                failed_steps=[e.step_key for e in failures if e.step_key],
                error_classes=classes,
            )
        )
    for entry in instance.all_logs(run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION):
        if entry.dagster_event is None:
            continue
        evaluation = entry.dagster_event.asset_check_evaluation_data
        if not evaluation.passed:
            found.append(
                check_failed(
                    asset=evaluation.asset_key.to_user_string(),
                    check=evaluation.check_name,
                    partition=evaluation.partition or run.tags.get(PARTITION_TAG),
                    severity=evaluation.severity.value,
                    blocking=bool(evaluation.blocking),
                    run_id=run.run_id,
                )
            )
    return found


def is_ours(context: dg.SensorEvaluationContext, run: dg.DagsterRun) -> bool:
    """Whether the run belongs to this code location: by the run's origin when both it and the
    sensor's are known, else by the job's name among this location's jobs."""
    here = context.code_location_origin
    origin = run.remote_job_origin
    if here is not None and origin is not None:
        return origin.location_name == here.location_name and (
            context.repository_name is None
            or origin.repository_origin.repository_name == context.repository_name
        )
    repository = context.repository_def
    return repository is None or repository.has_job(run.job_name)


def _is_transient(error: BotoCoreError | ClientError) -> bool:
    if isinstance(error, ClientError):
        return error.response.get("Error", {}).get("Code") in TRANSIENT_SNS_CODES
    return True  # unreachable endpoint, timeouts, connection errors


@dg.sensor(
    name="failure_alerts",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Publishes an alert to the SNS topic for every run of this code location that failed "
        "for good and every asset check that did not pass in it (job or asset, check, "
        "partition, failed steps, exception classes, run id; never data values or exception "
        "messages)."
    ),
)
def failure_alerts(context: dg.SensorEvaluationContext, alerts: AlertsResource) -> dg.SkipReason:
    """One tick: the runs that ended since the cursor's window, in the order they were last
    changed."""
    first = context.cursor is None
    cursor = RunCursor(datetime.now(UTC)) if first else RunCursor.parse(str(context.cursor))
    records = context.instance.get_run_records(
        filters=dg.RunsFilter(statuses=FINISHED, updated_after=cursor.since),
        order_by="update_timestamp",
        ascending=True,
        limit=RUNS_PER_TICK,
    )
    sent = runs = 0
    for record in records:
        if not cursor.is_new(record):
            continue
        run = record.dagster_run
        retried = run.tags.get(WILL_RETRY_TAG) == "true"
        if not first and not retried and is_ours(context, run):
            for alert in alerts_of_run(context.instance, run):
                try:
                    alerts.notify(alert.subject, alert.message)
                except (BotoCoreError, ClientError) as err:
                    if _is_transient(err):
                        context.log.warning(
                            f"alerts of run {run.run_id} not published ({type(err).__name__});"
                            " they are sent on the next tick"
                        )
                        context.update_cursor(cursor.dump())
                        return dg.SkipReason(f"{sent} alert(s) sent; SNS unavailable")
                    context.log.error(
                        f"an alert of run {run.run_id} was rejected by SNS "
                        f"({type(err).__name__}); it is not sent again"
                    )
                    continue
                sent += 1
        cursor.mark(record)
        runs += 1
    context.update_cursor(cursor.dump())
    if first:
        return dg.SkipReason(f"watching runs that end after {cursor.latest.isoformat()}")
    return dg.SkipReason(f"{sent} alert(s) for {runs} finished run(s)")

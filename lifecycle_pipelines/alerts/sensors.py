"""The sensor that tells the operators' SNS topic (`AlertsResource`) what went wrong: every run of
this code location that failed, and every asset check that did not pass (spec 9.3: notification
on data-quality issues).

It follows finished runs in the order their status last changed (run storage, the same on SQLite
and PostgreSQL instances) and reads each run's check evaluations from its event log. The cursor
holds the last finished run it dealt with. Its first tick starts at that moment: earlier failures
are not announced. With no topic configured (`LIFECYCLE_ALERTS_TOPIC_ARN` unset) an alert is
written to the log instead. SNS calls are retried by the client (standard mode); when one still
fails, the tick ends before the cursor passes that run, and the next tick sends its alerts again
(an alert may then arrive twice, never not at all).
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

RUNS_PER_TICK = 100  # finished runs read per tick; the rest wait for the next one
FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]


@dataclass
class RunCursor:
    """The last finished run dealt with: its status change's time and the runs that changed at
    that very time (runs are read from just before it, and those are skipped)."""

    after: datetime
    done: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> RunCursor:
        value = json.loads(text)
        return cls(datetime.fromisoformat(value["after"]), list(value["done"]))

    def dump(self) -> str:
        return json.dumps({"after": self.after.isoformat(), "done": self.done})

    def is_new(self, record: dg.RunRecord) -> bool:
        changed = record.update_timestamp.astimezone(UTC)
        return changed > self.after or (
            changed == self.after and record.dagster_run.run_id not in self.done
        )

    def passed(self, record: dg.RunRecord) -> None:
        changed = record.update_timestamp.astimezone(UTC)
        if changed != self.after:
            self.after, self.done = changed, []
        self.done.append(record.dagster_run.run_id)


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


def _ours(context: dg.SensorEvaluationContext, run: dg.DagsterRun) -> bool:
    """Whether the run is of a job of this code location (all runs when it is not known)."""
    repository = context.repository_def
    return repository is None or repository.has_job(run.job_name)


@dg.sensor(
    name="failure_alerts",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Publishes an alert to the SNS topic for every failed run of this code location and "
        "every asset check that did not pass (job or asset, check, partition, failed steps, "
        "exception classes, run id; never data values or exception messages)."
    ),
)
def failure_alerts(context: dg.SensorEvaluationContext, alerts: AlertsResource) -> dg.SkipReason:
    """One tick: the runs finished since the cursor, oldest first."""
    if context.cursor is None:
        start = RunCursor(datetime.now(UTC))
        context.update_cursor(start.dump())
        return dg.SkipReason(f"watching runs finished after {start.after.isoformat()}")
    cursor = RunCursor.parse(context.cursor)
    records = context.instance.get_run_records(
        filters=dg.RunsFilter(
            statuses=FINISHED, updated_after=cursor.after - timedelta(microseconds=1)
        ),
        order_by="update_timestamp",
        ascending=True,
        limit=RUNS_PER_TICK + len(cursor.done),
    )
    sent = runs = 0
    for record in records:
        if not cursor.is_new(record):
            continue
        run = record.dagster_run
        if _ours(context, run):
            for alert in alerts_of_run(context.instance, run):
                try:
                    alerts.notify(alert.subject, alert.message)
                except (BotoCoreError, ClientError) as err:
                    context.log.warning(
                        f"alerts of run {run.run_id} not published ({type(err).__name__}); "
                        "they are sent on the next tick"
                    )
                    return dg.SkipReason(f"{sent} alert(s) sent; SNS refused the next one")
                sent += 1
        cursor.passed(record)
        context.update_cursor(cursor.dump())
        runs += 1
    return dg.SkipReason(f"{sent} alert(s) for {runs} finished run(s)")

"""The sensor that tells the operators' SNS topic (`AlertsResource`) what went wrong: every run of
this code location that failed, and every asset check that did not pass in a finished run (spec
9.3: notification on data-quality issues).

It follows the runs' status changes (failed, succeeded, cancelled) in the order the instance
stored them (event storage ids, on SQLite as on PostgreSQL), with one cursor per status: no clock
decides what is new, and a run's status change is read once whatever is done to the run
afterwards (run retries add tags, say). Each tick reads again the last `LOOKBACK_IDS` ids below the cursor and passes over
the runs it already dealt with there: a status change whose id was allocated before the cursor
moved but committed after it (concurrent writers on PostgreSQL), or whose id SQLite handed out
again after the newest runs were deleted, is still read. Each failed attempt of a retried run is
alerted; the text says when Dagster will retry it (when the tag is already there). The first tick,
or a cursor this version does not know, starts at that moment: earlier failures are not
announced. Only runs of this code location are alerted (the run's origin names it; without an
origin, a run whose job this location defines).

With no topic configured (`LIFECYCLE_ALERTS_TOPIC_ARN` unset) an alert is written to the log
instead. When SNS fails (after the client's short retries), the tick ends before the cursor passes
that run and the next tick sends its alerts again (an alert may arrive twice, never not at all),
except when SNS says the alert itself is invalid: that one is logged as an error and passed over,
so it cannot hold back the ones after it. A missing topic or missing permissions hold every alert
until they are fixed. A tick starts no run after `TICK_SECONDS` (one run's alerts take at most
~16 s when SNS does not answer), so it ends inside the daemon's 60 s and its cursor is saved.
"""

from __future__ import annotations

import json
import time
from typing import Any, Literal

import dagster as dg
from botocore.exceptions import BotoCoreError, ClientError
from dagster import DagsterEventType

from lifecycle_pipelines.alerts.messages import PARTITION_TAG, Alert, check_failed, run_failed
from lifecycle_pipelines.resources import AlertsResource

Followed = Literal[
    DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_CANCELED
]
FOLLOWED: tuple[Followed, ...] = (
    DagsterEventType.RUN_FAILURE,
    DagsterEventType.RUN_SUCCESS,
    DagsterEventType.RUN_CANCELED,
)
PAGE = 100  # status changes read at a time
LOOKBACK_IDS = 500  # ids below the cursor read again (late commits, ids SQLite reuses)
TICK_SECONDS = 30.0  # no run is started after this; the daemon gives a tick 60 s
WILL_RETRY_TAG = "dagster/will_retry"
INVALID_ALERT_CODES = frozenset({"InvalidParameter", "InvalidParameterValue", "ValidationError"})


def alerts_of_run(instance: dg.DagsterInstance, run: dg.DagsterRun, failed: bool) -> list[Alert]:
    """The run's own alert when it `failed`, then one per check evaluation that did not pass (an
    evaluation without a partition of its own is the run's partition's)."""
    found = []
    if failed:
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
                will_retry=run.tags.get(WILL_RETRY_TAG) == "true",
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


def is_invalid_alert(error: BotoCoreError | ClientError) -> bool:
    """Whether SNS refused the alert itself (sending it again cannot work); any other failure
    (unreachable, throttled, a missing topic or permission) may pass and holds the alert."""
    if not isinstance(error, ClientError):
        return False
    return error.response.get("Error", {}).get("Code") in INVALID_ALERT_CODES


def _publish(
    context: dg.SensorEvaluationContext,
    alerts: AlertsResource,
    run: dg.DagsterRun,
    found: list[Alert],
) -> int | None:
    """Publish one run's alerts: how many were sent, or None when SNS failed and they wait for
    the next tick. An alert SNS refuses as invalid is logged and passed over."""
    sent = 0
    for alert in found:
        try:
            alerts.notify(alert.subject, alert.message)
        except (BotoCoreError, ClientError) as err:
            if not is_invalid_alert(err):
                context.log.warning(
                    f"alerts of run {run.run_id} not published ({type(err).__name__}); they are "
                    "sent on the next tick"
                )
                return None
            context.log.error(
                f"an alert of run {run.run_id} was refused by SNS as invalid; it is not sent again"
            )
            continue
        sent += 1
    return sent


def _now(instance: dg.DagsterInstance, event_type: DagsterEventType) -> dict[str, Any]:
    """A status's cursor that starts now: the newest id, the lookback's changes counted done."""
    latest = instance.fetch_run_status_changes(event_type, limit=LOOKBACK_IDS, ascending=False)
    records = latest.records
    after = records[0].storage_id if records else -1
    done = [
        [r.storage_id, r.run_id] for r in reversed(records) if r.storage_id > after - LOOKBACK_IDS
    ]
    return {"after": after, "done": done}


class StatusCursor:
    """Per status: the last storage id dealt with, and the (id, run) pairs dealt with in the
    `LOOKBACK_IDS` below it (read again each tick, passed over)."""

    def __init__(self, text: str | None, instance: dg.DagsterInstance) -> None:
        try:
            value: Any = json.loads(text) if text else {}
        except json.JSONDecodeError:
            value = {}
        self.state: dict[str, dict[str, Any]] = {}
        for event_type in FOLLOWED:
            known = value.get(event_type.value) if isinstance(value, dict) else None
            if isinstance(known, dict) and isinstance(known.get("after"), int):
                self.state[event_type.value] = {
                    "after": known["after"],
                    "done": [list(pair) for pair in known.get("done", [])],
                }
            else:  # first tick, or a cursor of another version: start now
                self.state[event_type.value] = _now(instance, event_type)

    def start(self, event_type: DagsterEventType) -> int:
        return max(-1, self.state[event_type.value]["after"] - LOOKBACK_IDS)

    def is_done(self, event_type: DagsterEventType, storage_id: int, run_id: str) -> bool:
        """Whether this status of the run was dealt with (a second event of the same status for
        one run counts as the same)."""
        entry = self.state[event_type.value]
        return storage_id <= entry["after"] - LOOKBACK_IDS or any(
            done_run == run_id for _, done_run in entry["done"]
        )

    def mark(self, event_type: DagsterEventType, storage_id: int, run_id: str) -> None:
        entry = self.state[event_type.value]
        entry["after"] = max(entry["after"], storage_id)
        floor = entry["after"] - LOOKBACK_IDS
        entry["done"] = [p for p in entry["done"] if p[0] > floor] + [[storage_id, run_id]]

    def dump(self) -> str:
        return json.dumps(self.state)


@dg.sensor(
    name="failure_alerts",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Publishes an alert to the SNS topic for every failed run of this code location and "
        "every asset check that did not pass in one (job or asset, check, partition, failed "
        "steps, exception classes, run id; never data values or exception messages)."
    ),
)
def failure_alerts(context: dg.SensorEvaluationContext, alerts: AlertsResource) -> dg.SkipReason:
    """One tick: the runs that finished since the cursor, in storage order, per status."""
    instance = context.instance
    first = context.cursor is None
    cursor = StatusCursor(context.cursor, instance)
    context.update_cursor(cursor.dump())
    if first:
        return dg.SkipReason("watching runs that finish from now on")
    started = time.monotonic()
    sent = runs = 0
    for event_type in FOLLOWED:
        after = cursor.start(event_type)
        while time.monotonic() - started < TICK_SECONDS:
            page = instance.fetch_run_status_changes(
                dg.RunStatusChangeRecordsFilter(event_type, after_storage_id=after),
                limit=PAGE,
                ascending=True,
            )
            for record in page.records:
                if time.monotonic() - started >= TICK_SECONDS:
                    return dg.SkipReason(f"{sent} alert(s) for {runs} run(s); the rest next tick")
                after = record.storage_id
                if cursor.is_done(event_type, record.storage_id, record.run_id):
                    continue
                run = instance.get_run_by_id(record.run_id)
                if run is not None and is_ours(context, run):
                    failed = event_type == DagsterEventType.RUN_FAILURE
                    published = _publish(context, alerts, run, alerts_of_run(instance, run, failed))
                    if published is None:
                        return dg.SkipReason(f"{sent} alert(s) sent; SNS failed")
                    sent += published
                cursor.mark(event_type, record.storage_id, record.run_id)
                context.update_cursor(cursor.dump())
                runs += 1
            if not page.has_more:
                break
    return dg.SkipReason(f"{sent} alert(s) for {runs} finished run(s)")

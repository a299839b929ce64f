"""The sensor that tells the operators' SNS topic (`AlertsResource`) what went wrong: every run of
this code location that failed, and every asset check that did not pass in a finished run (spec
9.3: notification on data-quality issues).

It follows the runs' status changes (`RUN_FAILURE`, `RUN_SUCCESS`) in the order the instance
stored them (event storage ids, on SQLite as on PostgreSQL), with one cursor per status: no clock
decides what is new, a run whose end is written late is read when it is written, and a run is
read once whatever happens to it afterwards (tags added by run retries, say). Each failed attempt
of a retried run is alerted; the text says when Dagster will retry it. The first tick starts at
that moment: earlier failures are not announced. Only runs of this code location are alerted
(the run's origin names it; without an origin, a run whose job this location defines).

With no topic configured (`LIFECYCLE_ALERTS_TOPIC_ARN` unset) an alert is written to the log
instead. SNS calls are retried by the client (standard mode). When SNS still fails, the tick ends
before the cursor passes that run and the next tick sends its alerts again (an alert may arrive
twice, never not at all) - except when SNS says the alert itself is invalid: that one is logged
as an error and passed over, so it cannot hold back the ones after it. A missing topic or missing
permissions hold every alert until they are fixed.
"""

from __future__ import annotations

import json
from typing import Literal

import dagster as dg
from botocore.exceptions import BotoCoreError, ClientError
from dagster import DagsterEventType

from lifecycle_pipelines.alerts.messages import PARTITION_TAG, Alert, check_failed, run_failed
from lifecycle_pipelines.resources import AlertsResource

Followed = Literal[DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_SUCCESS]
FOLLOWED: tuple[Followed, ...] = (DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_SUCCESS)
PAGE = 100  # status changes read at a time
PAGES_PER_TICK = 10  # the rest wait for the next tick
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


def _latest(instance: dg.DagsterInstance, event_type: DagsterEventType) -> int:
    latest = instance.fetch_run_status_changes(event_type, limit=1, ascending=False).records
    return latest[0].storage_id if latest else -1


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
    """One tick: the runs that failed or succeeded since the cursor, in storage order."""
    instance = context.instance
    if context.cursor is None:
        start = {t.value: _latest(instance, t) for t in FOLLOWED}
        context.update_cursor(json.dumps(start))
        return dg.SkipReason("watching runs that finish from now on")
    cursor: dict[str, int] = json.loads(context.cursor)
    sent = runs = 0
    for event_type in FOLLOWED:
        after = cursor.get(event_type.value, -1)
        for _ in range(PAGES_PER_TICK):
            page = instance.fetch_run_status_changes(
                dg.RunStatusChangeRecordsFilter(event_type, after_storage_id=after),
                limit=PAGE,
                ascending=True,
            )
            for record in page.records:
                run = instance.get_run_by_id(record.run_id)
                if run is not None and is_ours(context, run):
                    failed = event_type == DagsterEventType.RUN_FAILURE
                    for alert in alerts_of_run(instance, run, failed):
                        try:
                            alerts.notify(alert.subject, alert.message)
                        except (BotoCoreError, ClientError) as err:
                            if not is_invalid_alert(err):
                                context.log.warning(
                                    f"alerts of run {run.run_id} not published "
                                    f"({type(err).__name__}); they are sent on the next tick"
                                )
                                return dg.SkipReason(f"{sent} alert(s) sent; SNS failed")
                            context.log.error(
                                f"an alert of run {run.run_id} was refused by SNS as invalid; "
                                "it is not sent again"
                            )
                            continue
                        sent += 1
                after = cursor[event_type.value] = record.storage_id
                context.update_cursor(json.dumps(cursor))
                runs += 1
            if not page.has_more:
                break
    return dg.SkipReason(f"{sent} alert(s) for {runs} finished run(s)")

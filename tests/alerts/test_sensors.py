"""The alert sensor against a real Dagster instance (SQLite storage, run-sharded like `make dev`)
and the stack's SNS topic (moto, over HTTP), read back through an SQS queue subscribed to it."""

import json
import os
from collections.abc import Iterator
from typing import Any

import boto3
import dagster as dg
import pytest

from lifecycle_pipelines.alerts import sensors
from lifecycle_pipelines.alerts.sensors import failure_alerts
from lifecycle_pipelines.resources import AlertsResource

PARTITIONS = dg.StaticPartitionsDefinition(["north", "south"])
PERSONAL = "jane.doe@example.com"  # stands for a value the data could hold


@dg.asset(partitions_def=PARTITIONS)
def widgets() -> None:
    """An asset whose check fails in partition 'south'."""


@dg.asset_check(asset=widgets, blocking=True)
def widgets_balanced(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=context.partition_key != "south")


@dg.asset_check(asset=widgets, blocking=False)
def widgets_counted(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    """Fails in partition 'north' without failing the run."""
    return dg.AssetCheckResult(passed=context.partition_key != "north")


@dg.asset(partitions_def=PARTITIONS)
def gadgets() -> None:
    raise ValueError(f"row of {PERSONAL} is malformed")  # the message must not be alerted


@pytest.fixture
def topic_messages(stack_info: Any) -> Iterator[Any]:
    """A function returning the (subject, message) pairs published to the alerts topic since
    the last call, through an SQS queue of this test."""
    topic = os.environ["LIFECYCLE_ALERTS_TOPIC_ARN"]
    sqs, sns = boto3.client("sqs"), boto3.client("sns")
    url = sqs.create_queue(QueueName="alerts-test")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    subscription = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)
    sqs.purge_queue(QueueUrl=url)

    def received() -> list[tuple[str, str]]:
        out = []
        while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
            for message in batch:
                body = json.loads(message["Body"])
                out.append((body["Subject"], body["Message"]))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return out

    yield received
    sns.unsubscribe(SubscriptionArn=subscription["SubscriptionArn"])
    sqs.delete_queue(QueueUrl=url)


def _alerts(topic_arn: str | None = None) -> AlertsResource:
    return AlertsResource(topic_arn=topic_arn or os.environ["LIFECYCLE_ALERTS_TOPIC_ARN"])


DEFS = dg.Definitions(
    assets=[widgets, gadgets],
    asset_checks=[widgets_balanced, widgets_counted],
    jobs=[
        dg.define_asset_job("widgets_job", [widgets], partitions_def=PARTITIONS),
        dg.define_asset_job("gadgets_job", [gadgets], partitions_def=PARTITIONS),
    ],
)


def _run(
    instance: dg.DagsterInstance, job: str, key: str, tags: dict[str, str] | None = None
) -> dg.ExecuteInProcessResult:
    return DEFS.resolve_job_def(job).execute_in_process(
        instance=instance, partition_key=key, raise_on_error=False, tags=tags
    )


def _materialize(instance: dg.DagsterInstance, key: str) -> None:
    """The widgets and their check (a failed blocking check fails the run, too)."""
    _run(instance, "widgets_job", key)


def _tick(instance: dg.DagsterInstance, cursor: str | None, alerts: AlertsResource) -> str:
    with dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"alerts": alerts}, definitions=DEFS
    ) as context:
        failure_alerts(context)
        assert context.cursor is not None
        return context.cursor


def test_failed_checks_and_runs_are_alerted_once_from_the_first_tick_on(
    topic_messages: Any,
) -> None:
    with dg.instance_for_test() as instance:
        _materialize(instance, "south")
        cursor = _tick(instance, None, _alerts())  # starts now: the failure above is old
        assert topic_messages() == []
        for key in ("north", "south"):
            _materialize(instance, key)
        cursor = _tick(instance, cursor, _alerts())
        subjects = sorted(subject for subject, _ in topic_messages())
        assert subjects == [
            "[lifecycle] check failed: widgets widgets_balanced [south]",
            "[lifecycle] check failed: widgets widgets_counted [north]",  # in a run that passed
            "[lifecycle] run failed: widgets_job [south]",
        ]
        assert _tick(instance, cursor, _alerts()) == cursor  # nothing new, nothing sent
        assert topic_messages() == []


class OversizedCheckAlerts(AlertsResource):
    """Sends check alerts SNS must refuse as invalid (over 256 KiB), the others as they are."""

    def notify(self, subject: str, message: str) -> str | None:
        if "check failed" in subject:
            message += "x" * 300_000
        return super().notify(subject, message)


def test_sns_failures_hold_the_alerts_for_the_next_tick_and_an_invalid_alert_is_dropped(
    topic_messages: Any,
) -> None:
    topic = os.environ["LIFECYCLE_ALERTS_TOPIC_ARN"]
    unreachable = AlertsResource(
        topic_arn=topic, endpoint_url="http://127.0.0.1:9", max_attempts=1,
        connect_timeout_seconds=1,
    )  # fmt: skip
    with dg.instance_for_test() as instance:
        cursor = _tick(instance, None, _alerts())
        _materialize(instance, "south")
        assert _tick(instance, cursor, unreachable) == cursor  # held
        assert _tick(instance, cursor, _alerts(topic + "-missing")) == cursor  # held: NotFound
        cursor = _tick(instance, cursor, _alerts())
        assert len(topic_messages()) == 2  # the run's and its check's, two ticks late
        _materialize(instance, "south")
        cursor = _tick(instance, cursor, OversizedCheckAlerts(topic_arn=topic))
        assert [s for s, _ in topic_messages()] == ["[lifecycle] run failed: widgets_job [south]"]
        _tick(instance, cursor, _alerts())  # the invalid one is not tried again
        assert topic_messages() == []


def test_a_run_is_alerted_once_whatever_happens_to_it_after_and_says_when_it_is_retried(
    topic_messages: Any,
) -> None:
    with dg.instance_for_test() as instance:
        cursor = _tick(instance, None, _alerts())
        result = _run(instance, "gadgets_job", "north")
        cursor = _tick(instance, cursor, _alerts())
        [(_, first)] = topic_messages()
        assert "will retry" not in first
        instance.add_run_tags(result.run_id, {"dagster/auto_retry_run_id": "r-2"})
        cursor = _tick(instance, cursor, _alerts())
        assert topic_messages() == []  # a later change to the run is not a new failure
        _run(instance, "gadgets_job", "south", tags={"dagster/will_retry": "true"})
        _tick(instance, cursor, _alerts())
        [(subject, message)] = topic_messages()
        assert subject == "[lifecycle] run failed: gadgets_job [south]"
        assert "Dagster will retry it." in message


def test_a_failed_run_is_alerted_with_its_step_and_error_class_never_its_message(
    topic_messages: Any,
) -> None:
    with dg.instance_for_test() as instance:
        cursor = _tick(instance, None, _alerts())
        result = _run(instance, "gadgets_job", "north")
        dg.materialize([gadgets], instance=instance, partition_key="south", raise_on_error=False)
        assert not result.success
        _tick(instance, cursor, _alerts())
    [(subject, message)] = topic_messages()
    assert subject == "[lifecycle] run failed: gadgets_job [north]"  # not the ephemeral job's
    assert "failed steps: gadgets" in message and "errors: ValueError" in message
    assert result.run_id in message
    assert PERSONAL not in subject + message and "malformed" not in message


def test_every_run_is_read_across_pages_and_ticks(
    topic_messages: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sensors, "PAGE", 1)
    with dg.instance_for_test() as instance:
        cursor = _tick(instance, None, _alerts())
        for key in ("north", "south", "north"):
            _run(instance, "gadgets_job", key)
        _tick(instance, cursor, _alerts())
        assert len(topic_messages()) == 3


def test_a_failure_whose_id_sqlite_hands_out_again_is_still_alerted(topic_messages: Any) -> None:
    """Deleting the newest run frees its ids; the next run's status change reuses them."""
    with dg.instance_for_test() as instance:
        cursor = _tick(instance, None, _alerts())
        first = _run(instance, "gadgets_job", "north")
        cursor = _tick(instance, cursor, _alerts())
        assert len(topic_messages()) == 1
        instance.delete_run(first.run_id)
        second = _run(instance, "gadgets_job", "south")
        _tick(instance, cursor, _alerts())
        [(subject, message)] = topic_messages()
        assert subject == "[lifecycle] run failed: gadgets_job [south]"
        assert second.run_id in message


def test_a_cursor_of_another_version_starts_now_instead_of_replaying_history(
    topic_messages: Any,
) -> None:
    with dg.instance_for_test() as instance:
        _run(instance, "gadgets_job", "north")
        old = '{"latest": "2026-11-26T12:00:00+00:00", "seen": []}'
        cursor = _tick(instance, old, _alerts())
        assert topic_messages() == []
        _run(instance, "gadgets_job", "south")
        _tick(instance, cursor, _alerts())
        assert len(topic_messages()) == 1


def test_a_tick_out_of_time_leaves_the_rest_for_the_next(
    topic_messages: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with dg.instance_for_test() as instance:
        cursor = _tick(instance, None, _alerts())
        _run(instance, "gadgets_job", "north")
        monkeypatch.setattr(sensors, "TICK_SECONDS", 0.0)
        assert _tick(instance, cursor, _alerts()) == cursor
        assert topic_messages() == []
        monkeypatch.setattr(sensors, "TICK_SECONDS", 30.0)
        _tick(instance, cursor, _alerts())
        assert len(topic_messages()) == 1

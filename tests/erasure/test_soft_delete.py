"""Soft delete through the request sensor and the Dagster asset, on a shop of its own."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any, cast

import boto3
import dagster as dg
import pytest
from boto3.dynamodb.conditions import Key

from lifecycle_pipelines.assets.erasure import erasure_soft_delete
from lifecycle_pipelines.erasure import certificate
from lifecycle_pipelines.erasure.requests import status, submit
from lifecycle_pipelines.schedules import erasure as erasure_schedules
from lifecycle_pipelines.schedules.erasure import erasure_request_sensor
from tests.erasure.conftest import dynamodb_items_of, erasure_resources, put_back, run_request


def _subject_with_sessions(shop: Any) -> str:
    """A user with sessions who is still active in the shop (other tests erase some)."""
    sessions = boto3.resource("dynamodb").Table("Sessions").scan(Limit=50)["Items"]
    users = sorted({int(cast(str, s["userId"])) for s in sessions})
    row = shop.execute(
        "SELECT min(user_id) FROM users WHERE user_id = ANY(%s) AND deleted_at IS NULL", (users,)
    ).fetchone()
    return str(row[0])


@pytest.fixture
def subject(shop: Any) -> Iterator[str]:
    """A subject with sessions; their DynamoDB items are put back afterwards (the tables are
    shared with the rest of the session)."""
    chosen = _subject_with_sessions(shop)
    saved = dynamodb_items_of(chosen)
    yield chosen
    put_back(saved)


def _run(request_id: int) -> dg.ExecuteInProcessResult:
    result = run_request(erasure_soft_delete, request_id)
    assert result.success
    return result


def test_soft_delete_masks_postgres_and_removes_dynamodb_items(
    shop: Any, control: Any, subject: str
) -> None:
    sessions = boto3.resource("dynamodb").Table("Sessions")
    before = sessions.query(
        IndexName="userId-index", KeyConditionExpression=Key("userId").eq(subject)
    )
    assert before["Count"] > 0
    dry = submit(control, shop, subject, "dpo@shop.example", dry_run=True)
    assert _run(dry.request_id).success
    still = shop.execute(
        "SELECT full_name FROM users WHERE user_id = %s", (int(subject),)
    ).fetchone()
    assert still is not None and still[0] != "[erased]"  # a dry run changes nothing

    request = submit(control, shop, subject, "dpo@shop.example")
    result = _run(request.request_id)

    assert result.success
    metadata = result.asset_materializations_for_node("erasure_soft_delete")[0].metadata
    assert metadata["state"].value == "soft_deleted"
    user = shop.execute(
        "SELECT full_name, phone, email, deleted_at IS NOT NULL FROM users WHERE user_id = %s",
        (int(subject),),
    ).fetchone()
    assert user == ("[erased]", None, f"erased+{subject}@invalid.example", True)
    assert shop.execute(
        "SELECT count(*) FROM addresses WHERE user_id = %s AND recipient <> '[erased]'",
        (int(subject),),
    ).fetchone() == (0,)
    after = sessions.query(
        IndexName="userId-index", KeyConditionExpression=Key("userId").eq(subject)
    )
    assert after["Count"] == 0
    prefs = boto3.resource("dynamodb").Table("UserPreferences").get_item(Key={"userId": subject})
    assert "Item" not in prefs
    ledger = control.execute(
        "SELECT store, detail->>'changed' FROM lifecycle.erasure_ledger WHERE request_id = %s"
        " ORDER BY entry_id",
        (request.request_id,),
    ).fetchall()
    assert ("dynamodb.Sessions", str(before["Count"])) in ledger
    text = str(ledger) + str({k: v.value for k, v in metadata.items()})
    assert "@" not in text.replace("dpo@shop.example", "")  # no personal data in ledger/metadata
    again = _run(request.request_id)  # repeating changes nothing
    assert (
        again.asset_materializations_for_node("erasure_soft_delete")[0]
        .metadata["rows_changed"]
        .value
        == 0
    )


def _sensor_tick(instance: dg.DagsterInstance) -> dg.SensorResult | dg.SkipReason:
    resources = {"control_db": erasure_resources()["control_db"]}
    with dg.build_sensor_context(instance=instance, resources=resources) as context:
        result = erasure_request_sensor(context)
    assert isinstance(result, dg.SensorResult | dg.SkipReason)
    return result


def _requested(result: dg.SensorResult | dg.SkipReason) -> dict[str, str]:
    if isinstance(result, dg.SkipReason):
        return {}
    return {str(r.partition_key): str(r.run_key) for r in result.run_requests or []}


def test_the_sensor_turns_every_waiting_request_into_a_partition_and_a_run(
    shop: Any, control: Any
) -> None:
    first = submit(control, shop, "5", "dpo@shop.example", dry_run=True)
    second = submit(control, shop, "6", "dpo@shop.example", dry_run=True)
    instance = dg.DagsterInstance.ephemeral()
    # whichever committed first: both are found, none is skipped by an id cursor
    requested = _requested(_sensor_tick(instance))
    assert requested[str(first.request_id)] == f"erasure-{first.request_id}"
    assert requested[str(second.request_id)] == f"erasure-{second.request_id}"
    result = _sensor_tick(instance)
    assert isinstance(result, dg.SensorResult)
    added = (result.dynamic_partitions_requests or [])[0]
    assert isinstance(added, dg.AddDynamicPartitionsRequest)
    assert {str(first.request_id), str(second.request_id)} <= set(added.partition_keys or [])


def test_a_failed_soft_delete_is_launched_again_once_per_failure(
    shop: Any, control: Any, monkeypatch: Any
) -> None:
    request = submit(control, shop, "7", "dpo@shop.example", dry_run=True)
    key = str(request.request_id)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("erasure_requests", [key])
    run = instance.add_run(
        dg.DagsterRun(
            job_name="erasure_soft_delete_job",
            status=dg.DagsterRunStatus.STARTED,
            tags={"dagster/partition": key},
        )
    )
    assert key not in _requested(_sensor_tick(instance))  # under way: nothing launched
    instance.report_run_failed(run)
    assert key not in _requested(_sensor_tick(instance))  # not before the retry delay
    monkeypatch.setattr(erasure_schedules, "SOFT_DELETE_RETRY_AFTER", timedelta(0))
    assert _requested(_sensor_tick(instance))[key] == f"erasure-{key}-after-{run.run_id}"


def test_what_a_store_changed_is_in_the_ledger_even_when_a_later_store_fails(
    shop: Any, control: Any, subject: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lifecycle_pipelines.assets.erasure.erasers import ErasureStores

    request = submit(control, shop, subject, "dpo@shop.example")

    def search_down(self: Any) -> Any:
        raise ConnectionRefusedError("search engine unreachable")

    monkeypatch.setattr(ErasureStores, "search_eraser", search_down)
    failed = run_request(erasure_soft_delete, request.request_id)
    assert not failed.success
    monkeypatch.undo()
    assert _run(request.request_id).success  # the retry finds PostgreSQL already masked

    changed = dict(
        control.execute(
            "SELECT store, sum((detail->>'changed')::int) FROM lifecycle.erasure_ledger"
            " WHERE request_id = %s AND action = 'soft delete' GROUP BY store",
            (request.request_id,),
        ).fetchall()
    )
    assert changed["postgres.users"] == 1  # recorded by the failed run, not lost
    assert changed["dynamodb.Sessions"] > 0
    state = control.execute(
        "SELECT state FROM lifecycle.erasure_requests WHERE request_id = %s",
        (request.request_id,),
    ).fetchone()
    assert state == ("soft_deleted",)


def test_data_under_an_unknown_subjects_id_fails_for_review_and_changes_nothing(
    shop: Any, control: Any, monkeypatch: Any
) -> None:
    """DynamoDB holds preferences under an id the shop did not know at intake (a wrong id, or
    a shop row deleted outside this pipeline). The sensor launches the request; the run changes
    nothing, fails naming the store, and is not launched again: a person reviews it."""
    preferences = boto3.resource("dynamodb").Table("UserPreferences")
    preferences.put_item(Item={"userId": "987650002", "language": "de"})
    try:
        request = submit(control, shop, "987650002", "dpo@shop.example")
        assert request.state == "no_data_found"
        key = str(request.request_id)
        instance = dg.DagsterInstance.ephemeral()
        assert _requested(_sensor_tick(instance))[key] == f"erasure-{key}"

        failed = run_request(erasure_soft_delete, request.request_id, instance=instance)
        assert not failed.success
        error = str(failed.failure_data_for_node("erasure_soft_delete").error)  # type: ignore[union-attr]
        assert "dynamodb.UserPreferences (1) hold data under its id; nothing changed" in error
        assert status(control, request.request_id).state == "no_data_found"  # type: ignore[union-attr]
        assert "987650002" not in error
        assert "Item" in preferences.get_item(Key={"userId": "987650002"})
        monkeypatch.setattr(erasure_schedules, "SOFT_DELETE_RETRY_AFTER", timedelta(0))
        tags = instance.get_run_by_id(failed.run_id).tags  # type: ignore[union-attr]
        assert erasure_schedules.REVIEW_TAG in tags  # the run says it failed for review

        def failed_run(tags: dict[str, str]) -> dg.DagsterRun:  # as the launched job's run
            run = dg.DagsterRun(job_name="erasure_soft_delete_job", status=dg.DagsterRunStatus.FAILURE,
                                tags={**tags, "dagster/partition": key})  # fmt: skip
            return instance.add_run(run)

        failed_run({erasure_schedules.REVIEW_TAG: tags[erasure_schedules.REVIEW_TAG]})
        assert key not in _requested(_sensor_tick(instance))  # waits for review: not launched again
        other = failed_run({})  # a run that failed otherwise (a store down, say) is retried
        assert _requested(_sensor_tick(instance))[key] == f"erasure-{key}-after-{other.run_id}"
    finally:  # the moto server is shared: other tests count the seeded items
        preferences.delete_item(Key={"userId": "987650002"})


def test_a_user_given_the_id_since_the_request_is_never_erased(shop: Any, control: Any) -> None:
    top = shop.execute("SELECT max(user_id) FROM users").fetchone()[0]
    request = submit(control, shop, str(top + 1000), "dpo@shop.example")  # not a user yet
    assert request.state == "no_data_found"
    shop.execute(  # then someone else gets that id
        "INSERT INTO users (user_id, email, full_name, locale) VALUES (%s, %s, 'New Customer', 'en')",
        (top + 1000, f"new-{top + 1000}@shop.example"),
    )
    result = run_request(erasure_soft_delete, request.request_id)
    assert not result.success
    error = str(result.failure_data_for_node("erasure_soft_delete").error)  # type: ignore[union-attr]
    assert "postgres.users (1) hold data under its id; nothing changed" in error
    assert shop.execute(
        "SELECT full_name, deleted_at FROM users WHERE user_id = %s", (top + 1000,)
    ).fetchone() == ("New Customer", None)


def test_an_unknown_subject_is_launched_until_its_no_data_found_certificate_exists(
    shop: Any, control: Any
) -> None:
    request = submit(control, shop, "987650003", "dpo@shop.example")
    key = str(request.request_id)
    assert key in _requested(_sensor_tick(dg.DagsterInstance.ephemeral()))
    _run(request.request_id)
    assert certificate.get(control, request.request_id) is not None
    assert key not in _requested(_sensor_tick(dg.DagsterInstance.ephemeral()))


def test_the_sensor_turns_its_page_so_requests_that_keep_failing_starve_no_other(
    shop: Any, control: Any, monkeypatch: Any
) -> None:
    monkeypatch.setattr(erasure_schedules, "PENDING_PAGE", 2)
    mine = [submit(control, shop, str(n), "dpo@shop.example", dry_run=True) for n in (11, 12, 13)]
    # an upper bound of the requests waiting (other tests' among them)
    waiting = control.execute("SELECT count(*) FROM lifecycle.erasure_requests").fetchone()[0]
    instance, cursor, seen = dg.DagsterInstance.ephemeral(), None, set()
    resources = {"control_db": erasure_resources()["control_db"]}
    for _ in range(waiting // 2 + 2):  # every page once, and one more to wrap around
        with dg.build_sensor_context(
            instance=instance, resources=resources, cursor=cursor
        ) as context:
            result = erasure_request_sensor(context)
            assert isinstance(result, dg.SensorResult | dg.SkipReason)
            seen |= set(_requested(result))
            cursor = context.cursor
    assert {str(r.request_id) for r in mine} <= seen  # the newest included: not starved

"""Quarterly restore tests, retention expiry with object lock, schedules, policy mismatches."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import boto3
import dagster as dg
import psycopg
import pytest

from lifecycle_pipelines.archive import manifest, restore_test
from lifecycle_pipelines.archive.columns import ArchiveConfigError
from lifecycle_pipelines.archive.scope import check_shapes
from lifecycle_pipelines.assets.archive import (
    archive_restore_requests,
    archive_restore_verification,
    archive_retention_expiry,
    build_month_assets,
)
from lifecycle_pipelines.erasure.holds import lift_hold, place_hold
from lifecycle_pipelines.policy import load_policy
from lifecycle_pipelines.schedules.archive import archive_restore_sensor, archive_schedule
from tests.archive.conftest import archive_resources, assets_of, materialize, objects_under


def test_restore_test_requests_waits_and_verifies_against_the_manifest(
    control_conn: psycopg.Connection[Any],
) -> None:
    assert materialize(assets_of("orders")[:1], "2024-12-01").success
    resources = archive_resources()
    requested = dg.materialize(
        [archive_restore_requests],
        resources=resources,
        run_config={"ops": {"archive_restore_requests": {"config": {"sample_size": 2}}}},
    )
    assert requested.success
    metadata = requested.asset_materializations_for_node("archive_restore_requests")[0].metadata
    assert metadata["objects"].value == 2 and metadata["started_now"].value

    sensor_resources = {k: resources[k] for k in ("control_db", "s3")}
    with dg.build_sensor_context(resources=sensor_resources) as context:
        evaluation = archive_restore_sensor(context)
    assert isinstance(evaluation, dg.SensorResult)
    assert [req.run_key for req in evaluation.run_requests or []] == [
        f"restore-test-{metadata['test_id'].value}"
    ]

    verified = dg.materialize(
        [archive_restore_verification],
        resources=resources,
        selection=["archive_restore_verification"],
    )
    assert verified.success
    evaluations = verified.get_asset_check_evaluations()
    assert [(e.check_name, e.passed) for e in evaluations] == [
        ("restored_sample_matches_manifest", True)
    ]
    state = control_conn.execute(
        "SELECT state FROM lifecycle.restore_tests WHERE test_id = %s",
        (metadata["test_id"].value,),
    ).fetchone()
    assert state == ("passed",)


def test_an_open_restore_test_asks_again_for_restores_that_never_happened(
    control_conn: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert materialize(assets_of("orders")[:1], "2025-01-01").success
    control_conn.execute(
        "UPDATE lifecycle.restore_tests SET state = 'failed', finished_at = now()"
        " WHERE state = 'requested'"
    )  # this test's own open test, from a fresh start
    with dg.build_resources({"s3": archive_resources()["s3"]}) as resources:
        client = resources.s3.client("s3")
        with pytest.raises(ValueError, match=r"^tier: "):
            restore_test.start_restore_test(
                control_conn, client, sample_size=2, days=2, tier="Fastest"
            )
        assert restore_test.open_test(control_conn) is None  # nothing recorded

        def crash(*args: Any) -> bool:
            raise RuntimeError("lost the connection to S3")

        monkeypatch.setattr(restore_test, "request_restore", crash)
        with pytest.raises(RuntimeError):  # every archived object is sampled, this month's too
            restore_test.start_restore_test(
                control_conn, client, sample_size=10_000, days=2, tier="Bulk"
            )
        test_id = restore_test.open_test(control_conn)
        assert test_id is not None
        readable, total = restore_test.restore_progress(control_conn, client, test_id)
        assert readable < total  # this month's Glacier objects were never asked for
        monkeypatch.undo()

        again, _, started = restore_test.start_restore_test(
            control_conn, client, sample_size=10_000, days=2, tier="Bulk"
        )
        assert again == test_id and not started
        assert restore_test.restore_progress(control_conn, client, test_id) == (total, total)
    control_conn.execute(  # closed, so that no later test finds it open
        "UPDATE lifecycle.restore_tests SET state = 'failed' WHERE test_id = %s", (test_id,)
    )


def test_retention_expiry_deletes_every_version_unless_held(
    control_conn: psycopg.Connection[Any],
) -> None:
    expired_month, held_month = date(2024, 1, 1), date(2024, 2, 1)
    for month in (expired_month, held_month):
        assert materialize(assets_of("user_activity"), month.isoformat()).success
    held = manifest.get_objects(control_conn, "user_activity", held_month)[0]
    assert held.version_id is not None
    s3 = boto3.client("s3")
    s3.put_object_legal_hold(
        Bucket=held.bucket,
        Key=held.object_key,
        VersionId=held.version_id,
        LegalHold={"Status": "ON"},
    )

    result = dg.materialize([archive_retention_expiry], resources=archive_resources())

    assert result.success
    metadata = result.asset_materializations_for_node("archive_retention_expiry")[0].metadata
    assert metadata["objects_held"].value == 1
    assert objects_under("users/user_activity/year=2024/month=01/") == []
    assert objects_under("users/user_activity/year=2024/month=02/") != []
    expired = manifest.get_partition(control_conn, "user_activity", expired_month)
    assert expired is not None and expired.state == "expired"
    again = materialize(assets_of("user_activity")[:1], expired_month.isoformat())
    failure = again.failure_data_for_node("archive_user_activity")
    assert failure is not None and "has expired from the archive" in str(failure.error)
    reason = control_conn.execute(
        "SELECT state, hold_reason FROM lifecycle.archive_objects WHERE object_id = %s",
        (held.object_id,),
    ).fetchone()
    assert reason == ("held", "legal hold")
    s3.put_object_legal_hold(
        Bucket=held.bucket,
        Key=held.object_key,
        VersionId=held.version_id,
        LegalHold={"Status": "OFF"},
    )
    again = dg.materialize([archive_retention_expiry], resources=archive_resources())
    assert again.success
    assert objects_under("users/user_activity/year=2024/month=02/") == []


def test_a_hold_placed_with_the_lifecycle_command_keeps_an_object_past_retention(
    control_conn: psycopg.Connection[Any],
) -> None:
    month = date(2024, 3, 1)
    assert materialize(assets_of("user_activity"), month.isoformat()).success
    held = manifest.get_objects(control_conn, "user_activity", month)[0]
    hold = place_hold(
        control_conn,
        s3_uri=f"s3://{held.bucket}/{held.object_key}",
        reason="tax audit 2024",
        placed_by="legal@shop.example",
    )
    prefix = "users/user_activity/year=2024/month=03/"

    result = dg.materialize([archive_retention_expiry], resources=archive_resources())

    assert result.success
    assert objects_under(prefix) != []
    state = control_conn.execute(
        "SELECT state, hold_reason FROM lifecycle.archive_objects WHERE object_id = %s",
        (held.object_id,),
    ).fetchone()
    assert state == ("held", f"legal hold {hold} (lifecycle)")  # the reason text stays private
    assert lift_hold(control_conn, hold, "legal@shop.example")
    assert dg.materialize([archive_retention_expiry], resources=archive_resources()).success
    assert objects_under(prefix) == []


def test_expiry_leaves_a_partition_another_run_holds_for_the_next_pass(
    control_conn: psycopg.Connection[Any], local_stack: Any
) -> None:
    month = date(2024, 4, 1)
    assert materialize(assets_of("user_activity"), month.isoformat()).success
    prefix = "users/user_activity/year=2024/month=04/"
    with psycopg.connect(local_stack[0].app_conninfo("lifecycle"), autocommit=True) as other:
        manifest.lock_partition(other, "user_activity", month)  # e.g. a purge still running
        busy = dg.materialize([archive_retention_expiry], resources=archive_resources())
        assert busy.success
        metadata = busy.asset_materializations_for_node("archive_retention_expiry")[0].metadata
        assert metadata["partitions_busy"].value == 1
        assert objects_under(prefix) != []
    assert dg.materialize([archive_retention_expiry], resources=archive_resources()).success
    assert objects_under(prefix) == []


def test_the_monthly_schedule_runs_the_newest_eligible_month() -> None:
    policy = load_policy()
    job = dg.define_asset_job("j", selection=["archive_orders"])
    schedule = archive_schedule("orders", policy.get("orders"), job)
    context = dg.build_schedule_context(
        scheduled_execution_time=datetime(2026, 12, 2, 3, tzinfo=UTC)
    )
    request = schedule(context)
    assert isinstance(request, dg.RunRequest)
    assert (request.partition_key, request.run_key) == ("2025-12-01", "archive:orders:2025-12-01")


def test_a_policy_that_does_not_match_the_table_fails_and_writes_nothing(
    control_conn: psycopg.Connection[Any],
) -> None:
    policy = load_policy().get("orders")
    wrong = policy.model_copy(update={"personal_columns": [*policy.personal_columns, "email"]})
    month = date(2023, 12, 1)
    folder = "orders/orders/year=2023/month=12/"
    objects_before = objects_under(folder)
    partition_before = manifest.get_partition(control_conn, "orders", month)
    result = dg.materialize(
        build_month_assets("orders", wrong)[:1],
        resources=archive_resources(),
        partition_key=month.isoformat(),
        raise_on_error=False,
    )
    assert not result.success
    failure = result.failure_data_for_node("archive_orders")
    assert failure is not None
    assert "data_types.orders.personal_columns" in str(failure.error)
    assert "['email']" in str(failure.error)
    assert objects_under(folder) == objects_before  # nothing written (nor removed)
    assert manifest.get_partition(control_conn, "orders", month) == partition_before


@pytest.mark.parametrize("change", [{"primary_key": ["status"]}, {"money_columns": ["status"]}])
def test_keys_and_money_must_have_the_right_types(
    change: dict[str, Any], archive_shop: str
) -> None:
    wrong = load_policy().get("orders").model_copy(update=change)
    result = dg.materialize(
        build_month_assets("orders", wrong)[:1],
        resources=archive_resources(),
        partition_key="2023-12-01",
        raise_on_error=False,
    )
    failure = result.failure_data_for_node("archive_orders")
    assert failure is not None
    assert f"data_types.orders.{next(iter(change))}" in str(failure.error)


def test_a_table_without_a_version_column_cannot_be_archived(
    shop_conn: psycopg.Connection[Any],
) -> None:
    shop_conn.execute(
        "CREATE TABLE IF NOT EXISTS orders_without_versions (order_id bigint PRIMARY KEY,"
        " user_id bigint, created_at timestamptz NOT NULL)"
    )
    shop_conn.commit()
    policy = load_policy().get("orders")
    unversioned = policy.model_copy(
        update={
            "table": "orders_without_versions",
            "personal_columns": [],
            "money_columns": [],
            "children": [],
        }
    )
    with pytest.raises(ArchiveConfigError, match=r"data_types\.orders\.table: .*no updated_at"):
        check_shapes(shop_conn, "orders", unversioned)

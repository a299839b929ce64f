"""Late rounds end to end on one month: a round that failed before its manifest commit leaves
nothing behind, a round that failed after it is asked for again and keeps the month from
expiring silently, and expiry removes every round's objects and keys objects."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from typing import Any

import boto3
import dagster as dg
import psycopg
import pytest

from lifecycle_pipelines.archive import archiver, manifest
from lifecycle_pipelines.archive.expiry import expire_archives, expires_on
from lifecycle_pipelines.policy import load_policy
from lifecycle_pipelines.schedules.archive import archive_jobs_and_schedules
from tests.archive.conftest import archive_resources, assets_of, materialize, orders_stats

MONTH = date(2023, 12, 1)  # the oldest seeded month: expiring it expires no other test's month
PARTS = "orders/orders/year=2023/month=12/"
KEYS = "_purge_keys/orders/orders/year=2023/month=12/"


class Crash(RuntimeError):
    """An injected failure."""


def _current(prefix: str) -> set[str]:
    bucket = f"{os.environ['LIFECYCLE_BUCKET_PREFIX']}-archive"
    listed = boto3.client("s3").list_object_versions(Bucket=bucket, Prefix=prefix)
    return {v["Key"] for v in listed.get("Versions", []) if v["IsLatest"]}


def _late_order(shop_conn: psycopg.Connection[Any]) -> int:
    row = shop_conn.execute(
        "INSERT INTO orders (user_id, status, subtotal, shipping_fee, tax, total, created_at)"
        " SELECT user_id, 'delivered', 1, 0, 0, 1, %s FROM users LIMIT 1 RETURNING order_id",
        (datetime(2023, 12, 15, tzinfo=UTC),),
    ).fetchone()
    shop_conn.commit()
    assert row is not None
    return int(row[0])


def _late_rows_requests() -> list[tuple[str | None, str | None]]:
    sensor = next(
        s for s in archive_jobs_and_schedules()[2] if s.name == "archive_orders_late_rows"
    )
    resources = {k: archive_resources()[k] for k in ("control_db", "shop_db")}
    with dg.build_sensor_context(resources=resources) as context:
        result = sensor(context)
    if isinstance(result, dg.SkipReason):
        return []
    assert isinstance(result, dg.SensorResult)
    return [(r.partition_key, r.run_key) for r in result.run_requests or []]


def _expire(control_conn: Any) -> Any:
    policy = load_policy().get("orders")
    due = expires_on(policy, MONTH)
    assert due is not None
    return expire_archives(control_conn, boto3.client("s3"), {"orders": policy}, due)


def test_failed_late_rounds_leave_nothing_behind_and_the_month_expires_whole(
    shop_conn: psycopg.Connection[Any], control_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert materialize(assets_of("orders"), MONTH.isoformat()).success
    first = _current(PARTS)
    assert first and _current(KEYS) == {KEYS + "keys.parquet"}

    # a late round that fails at its manifest commit has uploaded a part and a keys object;
    # its row is gone by the next run, which only confirms the month and removes them
    gone = _late_order(shop_conn)
    monkeypatch.setattr(manifest.WrittenPartition, "commit", lambda *a, **k: _raise())
    assert not materialize(assets_of("orders")[:1], MONTH.isoformat()).success
    monkeypatch.undo()
    assert _current(PARTS) > first and KEYS + "keys-round-1.parquet" in _current(KEYS)
    shop_conn.execute("DELETE FROM orders WHERE order_id = %s", (gone,))
    shop_conn.commit()
    assert materialize(assets_of("orders")[:1], MONTH.isoformat()).success
    assert _current(PARTS) == first and _current(KEYS) == {KEYS + "keys.parquet"}

    # a late round whose verification fails stays written: asked for again, reported by expiry
    _late_order(shop_conn)
    monkeypatch.setattr(archiver, "verify_object", lambda *a, **k: _raise())
    assert not materialize(assets_of("orders"), MONTH.isoformat()).success
    monkeypatch.undo()
    partition = manifest.get_partition(control_conn, "orders", MONTH)
    assert partition is not None and (partition.state, partition.round) == ("written", 1)
    day = f"{datetime.now(UTC):%Y-%m-%d}"
    assert (MONTH.isoformat(), f"archive-late:orders:{MONTH}:round-1:{day}") in (
        _late_rows_requests()
    )
    report = _expire(control_conn)
    assert "orders 2023-12 (late round 1 written)" in report.not_purged
    assert "orders 2023-12" not in report.partitions_expired

    assert materialize(assets_of("orders"), MONTH.isoformat()).success
    assert orders_stats(shop_conn, MONTH)[0].rows == 0
    assert _current(KEYS) == {KEYS + "keys.parquet", KEYS + "keys-round-1.parquet"}

    report = _expire(control_conn)
    assert report.partitions_expired == ["orders 2023-12"]
    assert _current(PARTS) == set() and _current(KEYS) == set()  # every round's objects


def _raise() -> None:
    raise Crash("injected")

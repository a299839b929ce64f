"""Late rounds end to end on one month: what a round that failed before its manifest commit
left behind is reported by the next run, not deleted; a round that failed after it is asked
for again and keeps the month from expiring silently; expiry removes every round's objects,
keys objects and whatever else the month's folders hold."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from typing import Any

import boto3
import psycopg
import pytest

from lifecycle_pipelines.archive import archiver, manifest
from lifecycle_pipelines.archive.expiry import expire_archives, expires_on
from lifecycle_pipelines.policy import load_policy
from tests.archive.conftest import (
    assets_of,
    insert_late_order,
    late_rows_requests,
    materialize,
    orders_stats,
)

MONTH = date(2023, 12, 1)  # the oldest seeded month: expiring it expires no other test's month
PARTS = "orders/orders/year=2023/month=12/"
KEYS = "_purge_keys/orders/orders/year=2023/month=12/"
LATE = datetime(2023, 12, 15, tzinfo=UTC)


class Crash(RuntimeError):
    """An injected failure."""


def _bucket() -> str:
    return f"{os.environ['LIFECYCLE_BUCKET_PREFIX']}-archive"


def _current(prefix: str) -> set[str]:
    listed = boto3.client("s3").list_object_versions(Bucket=_bucket(), Prefix=prefix)
    return {v["Key"] for v in listed.get("Versions", []) if v["IsLatest"]}


def _expire(control_conn: Any) -> Any:
    policy = load_policy().get("orders")
    due = expires_on(policy, MONTH)
    assert due is not None
    return expire_archives(control_conn, boto3.client("s3"), {"orders": policy}, due)


def test_the_late_rows_sensor_asks_for_the_next_round_of_purged_months_with_rows_left(
    shop_conn: psycopg.Connection[Any], control_conn: Any
) -> None:
    month = MONTH
    assert materialize(assets_of("orders"), month.isoformat()).success  # purged (or confirmed)
    assert all(key != month.isoformat() for key, _ in late_rows_requests())
    late = insert_late_order(shop_conn, LATE)
    try:
        partition = manifest.get_partition(control_conn, "orders", month)
        assert partition is not None
        day = f"{datetime.now(UTC):%Y-%m-%d}"
        expected = f"archive-late:orders:{month}:round-{partition.round + 1}:{day}"
        assert (month.isoformat(), expected) in late_rows_requests()
    finally:
        shop_conn.execute("DELETE FROM orders WHERE order_id = %s", (late,))
        shop_conn.commit()


def test_failed_late_rounds_leave_nothing_behind_and_the_month_expires_whole(
    shop_conn: psycopg.Connection[Any], control_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert materialize(assets_of("orders"), MONTH.isoformat()).success
    first = _current(PARTS)
    round_0 = {KEYS + "keys.parquet", KEYS + "verified-round-0.json"}  # keys, and the marker
    assert first and _current(KEYS) == round_0

    # a late round that fails at its manifest commit has uploaded a part and a keys object;
    # its row is gone by the next run, which only confirms the month: it reports them and
    # deletes nothing (after a restore of the control database such objects may be the only
    # copy of purged rows)
    gone = insert_late_order(shop_conn, LATE)
    monkeypatch.setattr(manifest.WrittenPartition, "commit", lambda *a, **k: _raise())
    assert not materialize(assets_of("orders")[:1], MONTH.isoformat()).success
    monkeypatch.undo()
    left_behind = (_current(PARTS) - first) | (_current(KEYS) - round_0)
    assert len(left_behind) == 2
    shop_conn.execute("DELETE FROM orders WHERE order_id = %s", (gone,))
    shop_conn.commit()
    confirmed = materialize(assets_of("orders")[:1], MONTH.isoformat())
    metadata = confirmed.asset_materializations_for_node("archive_orders")[0].metadata
    assert metadata["unlisted_objects"].value == 2
    assert left_behind <= _current(PARTS) | _current(KEYS)

    # a late round whose verification fails stays written: asked for again, reported by expiry
    insert_late_order(shop_conn, LATE)
    monkeypatch.setattr(archiver, "verify_object", lambda *a, **k: _raise())
    assert not materialize(assets_of("orders"), MONTH.isoformat()).success
    monkeypatch.undo()
    partition = manifest.get_partition(control_conn, "orders", MONTH)
    assert partition is not None and (partition.state, partition.round) == ("written", 1)
    day = f"{datetime.now(UTC):%Y-%m-%d}"
    assert (MONTH.isoformat(), f"archive-late:orders:{MONTH}:round-1:{day}") in (
        late_rows_requests()
    )
    report = _expire(control_conn)
    assert "orders 2023-12 (late round 1 written)" in report.not_purged
    assert "orders 2023-12" not in report.partitions_expired

    assert materialize(assets_of("orders"), MONTH.isoformat()).success
    assert orders_stats(shop_conn, MONTH)[0].rows == 0
    assert _current(KEYS) == round_0 | {
        KEYS + "keys-round-1.parquet",
        KEYS + "verified-round-1.json",
    }

    stray = PARTS + "orders-part-00099.parquet"  # an object the manifest never listed
    boto3.client("s3").put_object(Bucket=_bucket(), Key=stray, Body=b"left behind")
    report = _expire(control_conn)
    assert report.partitions_expired == ["orders 2023-12"]
    assert _current(PARTS) == set() and _current(KEYS) == set()  # every round's, and the rest


def _raise() -> None:
    raise Crash("injected")


def _forget_month(control_conn: Any, month: date) -> None:
    """The control database as a backup from before the month was archived would hold it."""
    ids = (month,)
    control_conn.execute(
        "DELETE FROM lifecycle.subject_index WHERE object_id IN (SELECT object_id FROM"
        " lifecycle.archive_objects WHERE data_type = 'orders' AND partition_month = %s)",
        ids,
    )
    for table in ("archive_objects", "archive_partitions"):
        control_conn.execute(
            f"DELETE FROM lifecycle.{table} WHERE data_type = 'orders' AND partition_month = %s",
            ids,
        )


def _remove_everything_under(prefix: str) -> None:
    client = boto3.client("s3")
    listed = client.list_object_versions(Bucket=_bucket(), Prefix=prefix)
    for item in listed.get("Versions", []) + listed.get("DeleteMarkers", []):
        client.delete_object(Bucket=_bucket(), Key=item["Key"], VersionId=item["VersionId"])


def test_a_month_whose_objects_the_manifest_forgot_is_not_written_over(
    shop_conn: psycopg.Connection[Any], control_conn: Any
) -> None:
    """A month archived and purged, then the control database restored from before that: the
    month's objects are the only copy of its purged rows. Archiving the month again (new rows
    arrived) stops before writing anything, naming the objects."""
    month = date(2023, 1, 1)  # before the seeded shop's months: this test's own rows only
    folder = "orders/orders/year=2023/month=01/"
    keys = "_purge_keys/orders/orders/year=2023/month=01/"
    created = datetime(2023, 1, 10, tzinfo=UTC)
    try:
        insert_late_order(shop_conn, created)
        assert materialize(assets_of("orders"), month.isoformat()).success
        archived = _current(folder)
        assert archived and orders_stats(shop_conn, month)[0].rows == 0  # purged
        _forget_month(control_conn, month)
        insert_late_order(shop_conn, created)

        again = materialize(assets_of("orders")[:1], month.isoformat())

        assert not again.success
        failure = again.failure_data_for_node("archive_orders")
        assert failure is not None
        assert "S3 records round 0 of this month as verified" in str(failure.error)
        assert f"s3://{_bucket()}/{keys}verified-round-0.json" in str(failure.error)
        assert _current(folder) == archived  # nothing written over, nothing removed
        assert manifest.get_partition(control_conn, "orders", month) is None
    finally:
        _forget_month(control_conn, month)
        _remove_everything_under(folder)
        _remove_everything_under(keys)
        shop_conn.execute(
            "DELETE FROM orders WHERE created_at >= %s AND created_at < %s",
            (month, date(2023, 2, 1)),
        )
        shop_conn.commit()

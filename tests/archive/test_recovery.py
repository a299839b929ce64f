"""Crashes at every step converge on re-run; the purge never touches what it did not archive."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any, cast

import dagster as dg
import psycopg
import pytest

from lifecycle_pipelines.archive import archiver, manifest, purge
from lifecycle_pipelines.archive.crypto import SubjectKeyring
from lifecycle_pipelines.archive.eraser import ArchiveEraser
from lifecycle_pipelines.archive.manifest import PartitionBusy, lock_partition
from lifecycle_pipelines.archive.query import query_archive
from lifecycle_pipelines.control import ensure_control_schema
from lifecycle_pipelines.erasure.requests import submit
from lifecycle_pipelines.erasure.stores import Subject
from lifecycle_pipelines.policy import load_policy
from tests.archive.conftest import (
    ARCHIVE_SHOP_DB,
    add,
    archive_resources,
    archived_orders_stats,
    assets_of,
    insert_late_order,
    materialize,
    objects_under,
    orders_stats,
)


class Crash(RuntimeError):
    """An injected failure."""


def _assert_converged(
    shop_conn: Any, control_conn: Any, month: date, before: tuple[Any, Any]
) -> None:
    partition = manifest.get_partition(control_conn, "orders", month)
    assert partition is not None and partition.state == "purged"
    left_orders, left_items = orders_stats(shop_conn, month)
    archived_orders, archived_items = archived_orders_stats(control_conn, month)
    assert add(left_orders, archived_orders) == before[0]
    assert add(left_items, archived_items) == before[1]
    orphans = control_conn.execute(  # a re-run replaced the month's objects and their index
        "SELECT count(*) FROM lifecycle.subject_index s"
        " LEFT JOIN lifecycle.archive_objects o USING (object_id) WHERE o.object_id IS NULL"
    ).fetchone()
    assert orphans == (0,)


def test_crash_after_write_before_verification(
    shop_conn: Any, control_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    month = date(2024, 3, 1)
    before = orders_stats(shop_conn, month)

    def crash(*args: Any, **kwargs: Any) -> None:
        raise Crash("injected after write")

    monkeypatch.setattr(archiver, "verify_object", crash)
    assert not materialize(assets_of("orders"), month.isoformat()).success
    partition = manifest.get_partition(control_conn, "orders", month)
    assert partition is not None and partition.state == "written"
    assert orders_stats(shop_conn, month) == before  # nothing purged

    monkeypatch.undo()
    assert materialize(assets_of("orders"), month.isoformat()).success
    _assert_converged(shop_conn, control_conn, month, before)


def test_crash_after_verification_before_purge(shop_conn: Any, control_conn: Any) -> None:
    month = date(2024, 5, 1)
    before = orders_stats(shop_conn, month)
    archive_only = assets_of("orders")[:1]
    assert materialize(archive_only, month.isoformat()).success
    first = manifest.get_objects(control_conn, "orders", month)

    rerun = materialize(assets_of("orders"), month.isoformat())

    assert rerun.success
    metadata = rerun.asset_materializations_for_node("archive_orders")[0].metadata
    assert "confirmed, not re-extracted" in cast(str, metadata["summary"].value)
    again = manifest.get_objects(control_conn, "orders", month)
    assert [e.version_id for e in again] == [e.version_id for e in first]
    _assert_converged(shop_conn, control_conn, month, before)


def test_crash_in_the_middle_of_a_purge(
    shop_conn: Any, control_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    month = date(2024, 4, 1)
    before = orders_stats(shop_conn, month)
    real_batch = purge.purge_batch
    calls = {"n": 0}

    def crash_on_second(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise Crash("injected mid-purge")
        return real_batch(*args, **kwargs)

    monkeypatch.setattr(purge, "purge_batch", crash_on_second)
    result = materialize(
        assets_of("orders"),
        month.isoformat(),
        run_config={"ops": {"purge_orders": {"config": {"batch_size": 10}}}},
    )
    assert not result.success
    partly = orders_stats(shop_conn, month)
    assert 0 < partly[0].rows < before[0].rows
    partition = manifest.get_partition(control_conn, "orders", month)
    assert partition is not None and partition.state == "verified"

    monkeypatch.undo()
    assert materialize(assets_of("orders"), month.isoformat()).success
    _assert_converged(shop_conn, control_conn, month, before)


def test_rows_added_or_changed_after_the_snapshot_survive_the_purge_then_a_later_round_takes_them(
    shop_conn: psycopg.Connection[Any], control_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The purge keeps a row changed after the snapshot and never sees one inserted after it;
    archiving the month again archives both as round 1 (a crash in it before verification
    converges on re-run), its purge empties the month, and round 0's objects are untouched."""
    month = date(2024, 6, 1)
    assert materialize(assets_of("orders")[:1], month.isoformat()).success
    late = insert_late_order(shop_conn, datetime(2024, 6, 15, tzinfo=UTC))
    before_change = shop_conn.execute(
        "SELECT status FROM orders WHERE order_id = (SELECT min(order_id) FROM orders"
        " WHERE created_at >= %s AND created_at < %s)",
        (month, date(2024, 7, 1)),
    ).fetchone()
    assert before_change is not None
    first_status = before_change[0]
    changed = shop_conn.execute(
        "UPDATE orders SET status = 'returned' WHERE order_id = (SELECT min(order_id) FROM orders"
        " WHERE created_at >= %s AND created_at < %s) RETURNING order_id",
        (month, date(2024, 7, 1)),
    ).fetchone()
    shop_conn.commit()
    assert changed is not None

    result = materialize(assets_of("orders")[1:], month.isoformat())

    assert result.success
    metadata = result.asset_materializations_for_node("purge_orders")[0].metadata
    assert metadata["parents_kept_changed_after_snapshot"].value == 1
    left = {
        r[0]
        for r in shop_conn.execute(
            "SELECT order_id FROM orders WHERE created_at >= %s AND created_at < %s",
            (month, date(2024, 7, 1)),
        )
    }
    assert left == {late, changed[0]}

    first_round = manifest.get_objects(control_conn, "orders", month)
    left_before = orders_stats(shop_conn, month)
    archived_before = archived_orders_stats(control_conn, month)

    def crash(*args: Any, **kwargs: Any) -> None:
        raise Crash("injected after the late round's write")

    monkeypatch.setattr(archiver, "verify_object", crash)
    assert not materialize(assets_of("orders")[:1], month.isoformat()).success
    partition = manifest.get_partition(control_conn, "orders", month)
    assert partition is not None and (partition.state, partition.round) == ("written", 1)
    monkeypatch.undo()

    rounds = materialize(assets_of("orders"), month.isoformat())

    assert rounds.success
    metadata = rounds.asset_materializations_for_node("archive_orders")[0].metadata
    assert (metadata["round"].value, metadata["rows"].value) == (1, 2)
    assert metadata["rows_archived_all_rounds"].value == archived_before[0].rows + 2
    partition = manifest.get_partition(control_conn, "orders", month)
    assert partition is not None and (partition.state, partition.round) == ("purged", 1)
    assert orders_stats(shop_conn, month)[0].rows == orders_stats(shop_conn, month)[1].rows == 0
    objects = manifest.get_objects(control_conn, "orders", month)
    kept = [(e.object_key, e.version_id, e.state) for e in objects if e.round == 0]
    assert kept == [(e.object_key, e.version_id, "purged") for e in first_round]
    for table in ("orders", "order_items"):
        earlier = max(e.part for e in first_round if e.table_name == table)
        later = [e.part for e in objects if e.round == 1 and e.table_name == table]
        assert later and min(later) == earlier + 1  # part numbers go on: no key reused
    archived = archived_orders_stats(control_conn, month)  # every round's objects
    assert archived == (
        add(archived_before[0], left_before[0]),
        add(archived_before[1], left_before[1]),
    )
    again = materialize(assets_of("orders")[:1], month.isoformat())
    summary = again.asset_materializations_for_node("archive_orders")[0].metadata["summary"]
    assert "round 1" in cast(str, summary.value) and "confirmed" in cast(str, summary.value)
    # the changed order is in both rounds; `orders_latest` holds its newest version only
    with dg.build_resources(archive_resources()) as r:
        versions = (
            query_archive(
                f"SELECT status FROM orders WHERE order_id = {changed[0]}"
                f" UNION ALL SELECT 'latest:' || status FROM orders_latest WHERE order_id = {changed[0]}",
                s3=r.s3,
                control=r.control_db,
            )
            .table.column("status")
            .to_pylist()
        )
    assert sorted(versions) == sorted(["returned", "latest:returned", first_status])


def test_two_runs_of_one_partition_cannot_both_proceed(
    control_conn: psycopg.Connection[Any], shop_conn: Any
) -> None:
    month = date(2024, 8, 1)
    before = orders_stats(shop_conn, month)
    lock_partition(control_conn, "orders", month)  # another run holds the partition
    try:
        result = materialize(assets_of("orders"), month.isoformat())
        assert not result.success
        failure = result.failure_data_for_node("archive_orders")
        assert failure is not None and "another run holds this partition" in str(failure.error)
        assert manifest.get_partition(control_conn, "orders", month) is None
        assert orders_stats(shop_conn, month) == before
    finally:
        control_conn.execute("SELECT pg_advisory_unlock_all()")
    assert isinstance(PartitionBusy("x"), RuntimeError)


def test_purge_refuses_an_unverified_partition(shop_conn: Any) -> None:
    month = date(2024, 11, 1)
    before = orders_stats(shop_conn, month)
    result = materialize(assets_of("orders")[1:], month.isoformat())
    assert not result.success
    failure = result.failure_data_for_node("purge_orders")
    assert failure is not None and "nothing was deleted" in str(failure.error)
    assert orders_stats(shop_conn, month) == before


def test_a_failed_reconciliation_blocks_the_purge(
    shop_conn: Any, control_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    month = date(2024, 1, 1)
    before = orders_stats(shop_conn, month)
    real_stats = archiver.parts_source_stats

    def one_row_too_many(*args: Any, **kwargs: Any) -> Any:
        stats = real_stats(*args, **kwargs)
        first = replace(stats.parts[0], rows=stats.parts[0].rows + 1)
        return replace(stats, parts=[first, *stats.parts[1:]])

    monkeypatch.setattr(archiver, "parts_source_stats", one_row_too_many)
    result = materialize(assets_of("orders"), month.isoformat())

    assert not result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["reconciliation"] is False and checks["schema"] is True
    assert result.asset_materializations_for_node("purge_orders") == []
    partition = manifest.get_partition(control_conn, "orders", month)
    assert partition is not None and partition.state == "written"
    assert orders_stats(shop_conn, month) == before


def _blocked_on_a_lock(shop_conn: Any, pid_of_writer: int) -> bool:
    row = shop_conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND wait_event_type = 'Lock' AND %s = ANY(pg_blocking_pids(pid))",
        (pid_of_writer,),
    ).fetchone()
    return bool(row and row[0])


def test_a_row_updated_while_the_purge_runs_survives_it(
    shop_conn: psycopg.Connection[Any], control_conn: Any, local_stack: Any
) -> None:
    month = date(2025, 8, 1)
    assert materialize(assets_of("orders")[:1], month.isoformat()).success
    shop_conn.autocommit = True
    found = shop_conn.execute(
        "SELECT min(order_id) FROM orders WHERE created_at >= %s AND created_at < %s",
        (month, date(2025, 9, 1)),
    ).fetchone()
    assert found is not None
    victim = found[0]
    with psycopg.connect(local_stack[0].app_conninfo(ARCHIVE_SHOP_DB)) as writer:
        writer.execute("UPDATE orders SET total = total + 1000 WHERE order_id = %s", (victim,))
        writer_pid = writer.info.backend_pid  # the new version is not committed yet
        with ThreadPoolExecutor(1) as pool:
            purging = pool.submit(materialize, assets_of("orders")[1:], month.isoformat())
            # the purge reaches the locked row and waits for the writer (a condition, polled)
            while not purging.done() and not _blocked_on_a_lock(shop_conn, writer_pid):
                shop_conn.execute("SELECT pg_sleep(0.05)")
            writer.commit()
            result = purging.result()
    assert result.success
    metadata = result.asset_materializations_for_node("purge_orders")[0].metadata
    assert metadata["parents_kept_changed_after_snapshot"].value == 1
    kept = shop_conn.execute("SELECT total FROM orders WHERE order_id = %s", (victim,)).fetchone()
    assert kept is not None  # the archive holds the old version: the new one stays in the source


@pytest.mark.parametrize(
    ("asset", "config"),
    [("archive_orders", {"max_rows_per_object": 0}), ("purge_orders", {"batch_size": 0})],
)
def test_a_non_positive_size_is_refused_before_anything_runs(
    asset: str, config: dict[str, int], control_conn: Any
) -> None:
    month = date(2025, 2, 1)
    result = materialize(
        assets_of("orders"),
        month.isoformat(),
        selection=[asset],
        run_config={"ops": {asset: {"config": config}}},
    )
    assert not result.success
    failure = result.failure_data_for_node(asset)
    assert failure is not None and next(iter(config)) in str(failure.error)
    ensure_control_schema(control_conn)
    assert manifest.get_partition(control_conn, "orders", month) is None


def test_the_library_refuses_non_positive_sizes_naming_the_field(tmp_path: Any) -> None:
    from lifecycle_pipelines.archive.extract import PartWriter

    with pytest.raises(ValueError, match=r"^max_rows_per_object: "):
        PartWriter(tmp_path, "orders", str, 0, {})
    with pytest.raises(ValueError, match=r"^batch_size: "):
        purge.purge_partition(
            shop=None,  # type: ignore[arg-type]
            control=None,  # type: ignore[arg-type]
            s3=None,  # type: ignore[arg-type]
            data_type="orders",
            policy=None,  # type: ignore[arg-type]
            month=None,  # type: ignore[arg-type]
            batch_size=0,
        )


def test_an_erasure_between_a_failed_verification_and_the_re_run_does_not_block_it(
    shop_conn: psycopg.Connection[Any], control_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    month = date(2025, 9, 1)

    def crash(*args: Any, **kwargs: Any) -> None:
        raise Crash("verification interrupted")

    monkeypatch.setattr(archiver, "verify_object", crash)
    assert not materialize(assets_of("orders")[:1], month.isoformat()).success
    monkeypatch.undo()
    partition = manifest.get_partition(control_conn, "orders", month)
    assert partition is not None and partition.state == "written"
    found = shop_conn.execute(
        "SELECT user_id FROM orders WHERE created_at >= %s AND created_at < %s"
        " AND user_id IS NOT NULL LIMIT 1",
        (month, date(2025, 10, 1)),
    ).fetchone()
    assert found is not None
    subject = str(found[0])
    with dg.build_resources({"s3": archive_resources()["s3"]}) as resources:
        s3 = resources.s3
        keyring = SubjectKeyring(control_conn, s3.client("kms"), s3.sse_kms_key_id)
        request = submit(control_conn, shop_conn, subject, "privacy@shop.example")
        eraser = ArchiveEraser(
            control_conn,
            s3,
            keyring,
            load_policy(),
            request_id=request.request_id,
            today=date(2026, 11, 25),
        )
        results = eraser.erase(Subject(subject, "pseudonym"), dry_run=False)
    assert {r.store: r.changed for r in results}["archive.subject_key"] == 1

    rerun = materialize(assets_of("orders")[:1], month.isoformat())

    assert rerun.success
    partition = manifest.get_partition(control_conn, "orders", month)
    assert partition is not None and partition.state == "verified"


def test_parts_left_by_an_attempt_that_wrote_more_parts_are_removed(
    control_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    month = date(2025, 7, 1)
    folder = "orders/orders/year=2025/month=07/"

    def crash(*args: Any, **kwargs: Any) -> None:
        raise Crash("verification interrupted")

    monkeypatch.setattr(archiver, "verify_object", crash)
    small_parts = {"ops": {"archive_orders": {"config": {"max_rows_per_object": 20}}}}
    assert not materialize(
        assets_of("orders")[:1], month.isoformat(), run_config=small_parts
    ).success
    monkeypatch.undo()
    assert len(objects_under(folder)) > 1

    assert materialize(assets_of("orders")[:1], month.isoformat()).success

    listed = {e.object_key for e in manifest.get_objects(control_conn, "orders", month)}
    assert set(objects_under(folder)) == {k for k in listed if k.startswith(folder)}
    assert len(set(objects_under(folder))) == 1


def test_keys_that_disagree_with_the_verified_objects_are_refused_before_any_delete(
    shop_conn: psycopg.Connection[Any], control_conn: Any
) -> None:
    month = date(2025, 10, 1)
    assert materialize(assets_of("orders")[:1], month.isoformat()).success
    before = orders_stats(shop_conn, month)
    tamper = (
        "UPDATE lifecycle.archive_objects SET pk_sum = pk_sum + %s WHERE object_id = ("
        " SELECT min(object_id) FROM lifecycle.archive_objects WHERE data_type = 'orders'"
        " AND partition_month = %s AND table_name = 'orders')"
    )
    # as if the keys object listed a row that no verified object holds
    control_conn.execute(tamper, (-1, month))
    try:
        result = materialize(assets_of("orders")[1:], month.isoformat())
    finally:  # the manifest as it was: restore tests sample every archived object
        control_conn.execute(tamper, (1, month))

    assert not result.success
    failure = result.failure_data_for_node("purge_orders")
    assert failure is not None and "disagree with the verified objects" in str(failure.error)
    assert orders_stats(shop_conn, month) == before  # nothing was deleted

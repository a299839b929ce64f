"""The product sync against the embedded PostgreSQL and the local engine."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import psycopg
import pytest

from lifecycle_pipelines.resources.search.tantivy_backend import TantivyBackend
from lifecycle_pipelines.search_sync.sync import ReconciliationError, SyncBusy
from tests.search_sync.conftest import make_sync

NOV, DEC = date(2026, 11, 20), date(2026, 12, 2)


def _live(shop_conn: Any) -> int:
    row = shop_conn.execute("SELECT count(*) FROM products WHERE deleted_at IS NULL").fetchone()
    return int(row[0])


def _names(engine: Any, query: str) -> list[str]:
    return [h.source["name"] for h in engine.search("catalog-products", query, ["name"], size=3)]


def test_first_run_builds_the_month_index_behind_the_alias(
    engine: Any, shop_conn: Any, control_conn: Any
) -> None:
    report = make_sync(engine, shop_conn, control_conn).run(NOV)
    assert report.rotated and report.index == "catalog-products-2026-11"
    assert engine.alias_targets("catalog-products") == ["catalog-products-2026-11"]
    assert report.reconciliation is not None and report.reconciliation.matches
    assert engine.count("catalog-products") == _live(shop_conn)


def test_changes_soft_and_hard_deletes_propagate(
    engine: Any, shop_conn: Any, control_conn: Any
) -> None:
    sync = make_sync(engine, shop_conn, control_conn, safety_lag=timedelta(0))
    sync.run(NOV)
    renamed = shop_conn.execute(
        "UPDATE products SET name = 'Quixotic Zeppelin Lamp' WHERE product_id = ("
        "SELECT min(product_id) FROM products WHERE deleted_at IS NULL) RETURNING product_id"
    ).fetchone()[0]
    soft = shop_conn.execute(
        "UPDATE products SET deleted_at = now() WHERE product_id = ("
        "SELECT max(product_id) FROM products WHERE deleted_at IS NULL) RETURNING product_id"
    ).fetchone()[0]
    hard = shop_conn.execute(
        "INSERT INTO products (sku, name, brand_id, category_id, price) SELECT 'HARD-1',"
        " 'Ephemeral Widget', brand_id, category_id, 9.99 FROM products LIMIT 1"
        " RETURNING product_id"
    ).fetchone()[0]
    sync.run(NOV)
    assert _names(engine, "Ephemeral Widget")[0] == "Ephemeral Widget"
    shop_conn.execute("DELETE FROM products WHERE product_id = %s", (hard,))

    report = sync.run(NOV)

    assert not report.rotated
    assert _names(engine, "zeppelin")[0] == "Quixotic Zeppelin Lamp"
    ids = dict(engine.scan_field("catalog-products", "updated_at"))
    assert str(renamed) in ids and str(soft) not in ids and str(hard) not in ids
    assert report.hard_deleted == 1
    assert report.reconciliation is not None and report.reconciliation.matches


def test_a_late_committing_update_is_synced_on_the_next_run(
    engine: Any, shop_conn: Any, control_conn: Any, local_stack: Any
) -> None:
    sync = make_sync(engine, shop_conn, control_conn, safety_lag=timedelta(0), overlap=timedelta(0))
    sync.run(NOV)
    product = shop_conn.execute("SELECT min(product_id) FROM products").fetchone()[0]
    with psycopg.connect(local_stack[0].app_conninfo("shop_search_tests")) as late:
        late.execute("SELECT 1")  # the transaction (and its now()) starts here
        shop_conn.execute("SELECT pg_sleep(0.01)")
        late.execute(
            "UPDATE products SET name = 'Late Committed Kettle' WHERE product_id = %s",
            (product,),
        )
        first = sync.run(NOV)  # the update is not committed yet
        assert first.high is not None
        late.commit()
    sync.run(NOV)
    assert _names(engine, "late committed kettle")[0] == "Late Committed Kettle"


def test_a_failed_reconciliation_leaves_the_alias_on_the_old_index(
    engine: Any, shop_conn: Any, control_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync = make_sync(engine, shop_conn, control_conn)
    sync.run(NOV)
    real = engine.bulk_upsert_table

    def lose_one(index: str, table: Any, id_column: str) -> Any:
        # the engine acknowledges the first document of the new index but never stores it
        kept = table.slice(1) if index.endswith("2026-12") else table
        result = real(index, kept, id_column)
        result.indexed += table.num_rows - kept.num_rows
        return result

    monkeypatch.setattr(engine, "bulk_upsert_table", lose_one)
    with pytest.raises(ReconciliationError, match="missing") as failure:
        sync.run(DEC)
    assert "alias catalog-products left on ['catalog-products-2026-11']" in str(failure.value)
    assert engine.alias_targets("catalog-products") == ["catalog-products-2026-11"]

    monkeypatch.undo()
    report = sync.run(DEC)
    assert report.rotated
    assert engine.alias_targets("catalog-products") == ["catalog-products-2026-12"]


def test_tombstones_are_replayed_into_a_new_index(
    engine: Any, shop_conn: Any, control_conn: Any
) -> None:
    sync = make_sync(engine, shop_conn, control_conn)
    victim = shop_conn.execute(
        "SELECT min(product_id)::text FROM products WHERE deleted_at IS NULL"
    ).fetchone()[0]
    control_conn.execute(
        "INSERT INTO lifecycle.search_tombstones (alias, doc_id, reason) VALUES"
        " ('catalog-products', %s, 'test')",
        (victim,),
    )
    report = sync.run(NOV)
    assert report.tombstones_replayed == 1
    assert victim not in dict(engine.scan_field("catalog-products", "updated_at"))


def test_a_mapping_conflict_fails_the_rotation_and_leaves_the_alias(
    engine: Any, shop_conn: Any, control_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lifecycle_pipelines.search_sync import index_config
    from lifecycle_pipelines.search_sync import sync as sync_module
    from lifecycle_pipelines.search_sync.bulk import BulkFailure

    make_sync(engine, shop_conn, control_conn).run(NOV)
    narrow = index_config.mappings()
    del narrow["properties"]["currency"]

    def body_without_currency(rules: Any) -> dict[str, Any]:
        return {"settings": index_config.settings(rules), "mappings": narrow}

    monkeypatch.setattr(sync_module, "index_body", body_without_currency)
    with pytest.raises(BulkFailure, match="strict_dynamic_mapping_exception"):
        make_sync(engine, shop_conn, control_conn).run(DEC)
    assert engine.alias_targets("catalog-products") == ["catalog-products-2026-11"]


class _DocumentsOnly:
    """The local engine behind the plain `SearchBackend` interface (as OpenSearch is): no
    tables, no bulk sessions, no fast columns."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        if name in ("bulk_upsert_table", "bulk_session", "scan_versions"):
            raise AttributeError(name)
        return getattr(self._engine, name)


def test_a_backend_without_tables_syncs_and_reconciles_the_same(
    engine: TantivyBackend, shop_conn: Any, control_conn: Any
) -> None:
    from lifecycle_pipelines.search_sync.sync import TableSink

    plain = _DocumentsOnly(engine)
    assert not isinstance(plain, TableSink) and isinstance(engine, TableSink)
    sync = make_sync(plain, shop_conn, control_conn, safety_lag=timedelta(0), batch_size=7)
    report = sync.run(NOV)
    assert report.rotated and report.reconciliation is not None
    assert report.reconciliation.matches
    assert engine.count("catalog-products") == _live(shop_conn)
    shop_conn.execute(
        "UPDATE products SET name = 'Plain Path Teapot' WHERE product_id = ("
        "SELECT min(product_id) FROM products WHERE deleted_at IS NULL)"
    )
    again = sync.run(NOV)
    assert again.upserted >= 1 and again.reconciliation is not None
    assert again.reconciliation.matches
    # the fast columns tell the same story as the documents
    assert make_sync(engine, shop_conn, control_conn)._index_versions(
        "catalog-products"
    ).checksum == int(again.reconciliation.index_checksum)
    assert _names(engine, "teapot")[0] == "Plain Path Teapot"


def test_a_change_to_a_brand_category_or_stock_resyncs_its_products(
    engine: Any, shop_conn: Any, control_conn: Any
) -> None:
    sync = make_sync(engine, shop_conn, control_conn, safety_lag=timedelta(0))
    sync.run(NOV)
    brand, category, stocked = shop_conn.execute(
        "SELECT brand_id, (SELECT min(category_id) FROM categories WHERE category_id <>"
        " p.category_id), product_id FROM products p WHERE deleted_at IS NULL"
        " ORDER BY product_id DESC LIMIT 1"
    ).fetchone()
    # updates that change nothing but the rows' updated_at (set by trigger)
    shop_conn.execute("UPDATE brands SET name = name WHERE brand_id = %s", (brand,))
    shop_conn.execute("UPDATE categories SET name = name WHERE category_id = %s", (category,))
    shop_conn.execute(
        "INSERT INTO inventory (product_id, quantity) VALUES (%s, 0) ON CONFLICT (product_id)"
        " DO UPDATE SET reserved = inventory.reserved",
        (stocked,),
    )
    affected = {
        str(row[0])
        for row in shop_conn.execute(
            "SELECT product_id FROM products WHERE deleted_at IS NULL AND (brand_id = %s"
            " OR category_id = %s OR product_id = %s)",
            (brand, category, stocked),
        )
    }
    before = sync._index_versions("catalog-products")
    report = sync.run(NOV)
    assert report.index_versions is not None and report.reconciliation is not None
    assert report.reconciliation.matches
    assert affected <= set(before.stale_in(report.index_versions)) and len(affected) > 1


def test_a_deleted_stock_row_is_repaired_by_the_daily_run(
    engine: Any, shop_conn: Any, control_conn: Any
) -> None:
    sync = make_sync(engine, shop_conn, control_conn, safety_lag=timedelta(0))
    sync.run(NOV)
    product = shop_conn.execute(
        "SELECT i.product_id FROM inventory i JOIN products p USING (product_id)"
        " JOIN brands b USING (brand_id) JOIN categories c USING (category_id)"
        " WHERE p.deleted_at IS NULL AND i.quantity - i.reserved > 0"
        " AND GREATEST(p.updated_at, b.updated_at, c.updated_at) < now() - interval '1 day'"
        " ORDER BY 1 LIMIT 1"
    ).fetchone()[0]
    # no updated_at of the window shows this: the product's version goes back in time
    shop_conn.execute("DELETE FROM inventory WHERE product_id = %s", (product,))

    report = sync.run(NOV)

    assert not report.rotated and report.repaired == 1
    assert report.reconciliation is not None and report.reconciliation.matches
    stock = {doc_id: value for doc_id, value in engine.scan_field("catalog-products", "in_stock")}
    assert stock[str(product)] is False


def test_a_write_committed_during_the_full_load_does_not_fail_the_rotation(
    engine: Any,
    shop_conn: Any,
    control_conn: Any,
    local_stack: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import lifecycle_pipelines.search_sync.sync as sync_module

    loading = sync_module.all_documents
    product = shop_conn.execute(
        "SELECT max(product_id) FROM products WHERE deleted_at IS NULL"
    ).fetchone()[0]

    def load_while_someone_writes(conn: Any, batch_size: int) -> Any:
        for number, batch in enumerate(loading(conn, batch_size)):
            yield batch
            if number == 0:  # another session commits a change the load has not read yet
                with psycopg.connect(local_stack[0].app_conninfo("shop_search_tests")) as other:
                    other.execute(
                        "UPDATE products SET name = 'Midnight Rotation Teapot'"
                        " WHERE product_id = %s",
                        (product,),
                    )

    monkeypatch.setattr(sync_module, "all_documents", load_while_someone_writes)
    report = make_sync(engine, shop_conn, control_conn, batch_size=50).run(NOV)

    assert report.rotated and report.reconciliation is not None
    assert report.reconciliation.matches
    assert _names(engine, "midnight rotation teapot")[0] == "Midnight Rotation Teapot"


def test_a_second_sync_of_the_same_alias_waits_for_none_and_changes_nothing(
    engine: Any, shop_conn: Any, control_conn: Any, local_stack: Any
) -> None:
    key = "hashtextextended('lifecycle.search_sync:catalog-products', 0)"
    with psycopg.connect(local_stack[0].app_conninfo("lifecycle"), autocommit=True) as other:
        other.execute(f"SELECT pg_advisory_lock({key})")  # another run holds the alias's lock
        with pytest.raises(SyncBusy, match="another sync is running"):
            make_sync(engine, shop_conn, control_conn).run(NOV)
        assert engine.alias_targets("catalog-products") == []
        # released by its holder (a closed session's lock goes only once its server process
        # has exited, which the client does not wait for)
        other.execute(f"SELECT pg_advisory_unlock({key})")
    report = make_sync(engine, shop_conn, control_conn).run(NOV)
    assert report.rotated

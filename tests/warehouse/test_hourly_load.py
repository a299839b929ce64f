"""Hourly warehouse loads through Dagster against PostgreSQL, and the Redshift SQL they issue."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import dagster as dg
import psycopg
import pyarrow as pa
import pytest
from dagster._core.errors import DagsterUnknownPartitionError

from lifecycle_pipelines.assets.warehouse import warehouse_hourly
from lifecycle_pipelines.assets.warehouse.hourly_asset import _hour
from lifecycle_pipelines.environments import resources_for
from lifecycle_pipelines.local.stack import LocalStack, StackInfo
from lifecycle_pipelines.resources import S3Resource
from lifecycle_pipelines.warehouse import sql
from lifecycle_pipelines.warehouse.binary_copy import BinaryCopyEncoder
from lifecycle_pipelines.warehouse.loader import HourLoader
from lifecycle_pipelines.warehouse.model import TABLES
from lifecycle_pipelines.warehouse.outcome import ReconciliationFailed
from lifecycle_pipelines.warehouse.quality import check_hour
from lifecycle_pipelines.warehouse.source import HourSource
from lifecycle_pipelines.warehouse.target import WarehouseTarget
from tests.conftest import private_shop, resources_with_shop
from tests.warehouse.recording import RecordingConnection

SHOP = "shop_warehouse_tests"


@pytest.fixture(scope="session")
def warehouse_shop(local_stack: tuple[LocalStack, StackInfo]) -> str:
    return private_shop(local_stack[0], SHOP)


@pytest.fixture
def shop(local_stack: Any, warehouse_shop: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(local_stack[0].app_conninfo(warehouse_shop), autocommit=True) as conn:
        yield conn


@pytest.fixture
def warehouse(local_stack: Any) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(local_stack[0].app_conninfo("warehouse"), autocommit=True) as conn:
        yield conn


def _resources() -> dict[str, Any]:
    return resources_with_shop(SHOP)


def _busiest_hour(shop: Any) -> datetime:
    row = shop.execute(
        "SELECT date_trunc('hour', updated_at) FROM orders GROUP BY 1 ORDER BY count(*) DESC,"
        " 1 LIMIT 1"
    ).fetchone()
    return row[0].astimezone(UTC)


def _load(hour: datetime, **config: Any) -> dg.ExecuteInProcessResult:
    run_config = {"ops": {"warehouse_hourly": {"config": config}}} if config else None
    return dg.materialize(
        [warehouse_hourly],
        resources=_resources(),
        partition_key=f"{hour:%Y-%m-%d-%H:%M}",
        run_config=run_config,
        raise_on_error=False,
    )


def _facts(warehouse: Any) -> tuple[Any, ...]:
    row = warehouse.execute(
        "SELECT count(*), sum(order_id), sum(total) FROM analytics.fact_orders"
    ).fetchone()
    return tuple(row)


def test_an_hour_lands_pseudonymised_reconciled_and_idempotent(shop: Any, warehouse: Any) -> None:
    hour = _busiest_hour(shop)
    changed = shop.execute(
        "SELECT count(*), sum(total) FROM orders WHERE updated_at >= %s AND updated_at < %s",
        (hour, hour + timedelta(hours=1)),
    ).fetchone()
    result = _load(hour)
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"reconciliation": True}
    metadata = result.asset_materializations_for_node("warehouse_hourly")[0].metadata
    assert metadata["rows_fact_orders"].value == changed[0] > 0
    columns = {
        r[0]
        for r in warehouse.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'analytics'"
        )
    }
    assert not columns & {"email", "full_name", "phone", "user_id", "shipping_name"}
    types = dict(
        warehouse.execute(
            "SELECT column_name, data_type || coalesce('(' || character_maximum_length || ')', '')"
            " FROM information_schema.columns WHERE table_name = 'fact_orders'"
        ).fetchall()
    )
    assert types["status"] == "character varying(20)" and types["user_key"] == "character(64)"
    key = warehouse.execute("SELECT user_key FROM analytics.fact_orders LIMIT 1").fetchone()[0]
    assert len(key) == 64 and not key.isdigit()
    before = _facts(warehouse)
    versions = "SELECT order_id, xmin::text FROM analytics.fact_orders ORDER BY 1"
    written = warehouse.execute(versions).fetchall()
    assert _load(hour).success
    assert _facts(warehouse) == before
    assert warehouse.execute(versions).fetchall() == written  # not a row rewritten


def test_a_late_change_to_an_older_order_lands_on_its_row(shop: Any, warehouse: Any) -> None:
    first = _busiest_hour(shop)
    assert _load(first).success
    order = warehouse.execute("SELECT min(order_id) FROM analytics.fact_orders").fetchone()[0]
    later = first + timedelta(hours=5)
    shop.execute("ALTER TABLE orders DISABLE TRIGGER orders_set_updated_at")
    try:  # a change committed in a later hour (the trigger would stamp it with now())
        shop.execute(
            "UPDATE orders SET status = 'returned', updated_at = %s WHERE order_id = %s",
            (later + timedelta(minutes=5), order),
        )
    finally:
        shop.execute("ALTER TABLE orders ENABLE TRIGGER orders_set_updated_at")
    count = warehouse.execute("SELECT count(*) FROM analytics.fact_orders").fetchone()[0]
    assert _load(later).success
    row = warehouse.execute(
        "SELECT status, count(*) OVER () FROM analytics.fact_orders WHERE order_id = %s", (order,)
    ).fetchone()
    assert row == ("returned", 1)
    assert warehouse.execute("SELECT count(*) FROM analytics.fact_orders").fetchone()[0] >= count


def _hour_of_order(shop: Any, order: int) -> datetime:
    row = shop.execute(
        "SELECT date_trunc('hour', updated_at) FROM orders WHERE order_id = %s", (order,)
    ).fetchone()
    return row[0].astimezone(UTC)


def _order_ids(shop: Any, hour: datetime) -> list[int]:
    rows = shop.execute(
        "SELECT order_id FROM orders WHERE updated_at >= %s AND updated_at < %s",
        (hour, hour + timedelta(hours=1)),
    ).fetchall()
    return [r[0] for r in rows]


def _content(warehouse: Any, schema: str) -> list[tuple[Any, ...]]:
    return [
        warehouse.execute(
            f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM \"{schema}\".{table} t"
        ).fetchone()
        for table in ("fact_orders", "fact_order_items", "dim_users", "dim_products", "dim_date")
    ]


@contextmanager
def _restamped(shop: Any, orders: list[int], at: datetime) -> Iterator[None]:
    """The orders' `updated_at` moved to `at` (as changes committed then), put back afterwards."""
    saved = shop.execute(
        "SELECT order_id, updated_at FROM orders WHERE order_id = ANY(%s)", (orders,)
    ).fetchall()
    shop.execute("ALTER TABLE orders DISABLE TRIGGER orders_set_updated_at")
    try:
        shop.execute("UPDATE orders SET updated_at = %s WHERE order_id = ANY(%s)", (at, orders))
        yield
    finally:
        for order, updated_at in saved:
            shop.execute(
                "UPDATE orders SET updated_at = %s WHERE order_id = %s", (updated_at, order)
            )
        shop.execute("ALTER TABLE orders ENABLE TRIGGER orders_set_updated_at")


def test_hours_in_either_order_land_the_same_rows_direct_or_staged(
    shop: Any, warehouse: Any, local_stack: Any
) -> None:
    """The first hour into an empty schema is COPYed straight into the targets; a later hour
    with at least half of its keys above a target's greatest key is split (those COPYed into the
    target, the others MERGEd from a stage); one with fewer is staged (MERGEd, new keys
    INSERTed). Both orders end with the same warehouse, every load reconciled."""
    middle = shop.execute(
        "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY order_id) FROM orders"
    )
    first = _hour_of_order(shop, middle.fetchone()[0])
    keys = _order_ids(shop, first)
    second = datetime(2021, 3, 1, 5, tzinfo=UTC)  # no order of the seeded shop is this old
    # one key above and one below every key of `first`: both branches of the staged path
    moved = [max(keys) + 7, min(keys) - 7]
    last = _busiest_hour(shop)  # the shop's newest keys: above every key of the other two
    assert min(_order_ids(shop, last)) > max(moved)
    schemas = {
        "hourly_load_forward": (first, second, last),
        "hourly_load_backward": (second, first, last),
    }
    paths: dict[str, list[dict[str, str]]] = {}
    content: dict[str, list[tuple[Any, ...]]] = {}
    try:
        with (
            _restamped(shop, moved, second + timedelta(minutes=10)),
            dg.build_resources({"s3": resources_for("local")["s3"]}) as r,
        ):
            assert sorted(_order_ids(shop, second)) == sorted(moved)
            for schema, hours in schemas.items():
                warehouse.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                paths[schema] = []
                for hour in hours:
                    with psycopg.connect(local_stack[0].app_conninfo("warehouse")) as conn:
                        load = _loader(shop, conn, r.s3, schema).run(hour)
                    assert check_hour(load).success
                    paths[schema].append({t.table.name: t.path for t in load.tables})
                content[schema] = _content(warehouse, schema)
    finally:
        for schema in schemas:
            warehouse.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    assert content["hourly_load_forward"] == content["hourly_load_backward"]
    assert content["hourly_load_forward"][0][0] == len(keys) + len(moved) + len(
        _order_ids(shop, last)
    )
    for schema in schemas:
        first_load = paths[schema][0]
        assert first_load["fact_orders"] == first_load["dim_products"] == "direct"
        assert first_load["dim_users"] == "staged"  # a derived key is always staged
    # `second` after `first`: one key above the bound, one below: half new, so split
    assert paths["hourly_load_forward"][1]["fact_orders"] == "split"
    # `first` after `second`: every key below the bound: staged, MERGEd
    assert paths["hourly_load_backward"][1]["fact_orders"] == "staged"
    for schema in schemas:  # every key new, into a warehouse that holds rows already
        assert paths[schema][2]["fact_orders"] == "direct"


def test_a_new_source_column_is_reported_not_dropped(shop: Any) -> None:
    hour = _busiest_hour(shop)
    shop.execute("ALTER TABLE users ADD COLUMN nickname varchar(30)")
    try:
        failed = _load(hour)
        assert not failed.success
        error = str(failed.failure_data_for_node("warehouse_hourly").error)  # type: ignore[union-attr]
        assert "users: new source column(s) ['nickname']" in error
        tolerated = _load(hour, on_new_column="ignore")
        assert tolerated.success
        metadata = tolerated.asset_materializations_for_node("warehouse_hourly")[0].metadata
        assert metadata["new_source_columns_not_loaded"].value == {"users": ["nickname"]}
    finally:
        shop.execute("ALTER TABLE users DROP COLUMN nickname")


def test_a_changed_source_column_type_fails_naming_the_column_and_loads_nothing(
    shop: Any, warehouse: Any
) -> None:
    hour = _busiest_hour(shop)
    assert _load(hour).success  # the warehouse has fact_orders.total as numeric(12,2)
    before = _facts(warehouse)
    shop.execute("ALTER TABLE orders ALTER COLUMN total TYPE numeric(14,3)")
    try:
        failed = _load(hour)
        assert not failed.success
        error = str(failed.failure_data_for_node("warehouse_hourly").error)  # type: ignore[union-attr]
        assert "analytics.fact_orders: column type(s) no longer match the source" in error
        assert "total is numeric(12,2), the source now needs numeric(14,3)" in error
        assert _facts(warehouse) == before
    finally:
        shop.execute("ALTER TABLE orders ALTER COLUMN total TYPE numeric(12,2)")


def test_rows_deleted_in_the_source_leave_the_warehouse_but_archive_purges_do_not(
    shop: Any, warehouse: Any
) -> None:
    hour = _busiest_hour(shop)
    assert _load(hour).success  # also installs the shop's deletion tombstones
    deleted, purged = (
        row[0]
        for row in shop.execute(
            "SELECT order_item_id FROM order_items WHERE updated_at >= %s AND updated_at < %s"
            " ORDER BY order_item_id LIMIT 2",
            (hour, hour + timedelta(hours=1)),
        ).fetchall()
    )
    shop.execute("DELETE FROM order_items WHERE order_item_id = %s", (deleted,))
    with shop.transaction():  # as the archive purge deletes: archived, so no tombstone
        shop.execute("SELECT set_config('lifecycle.purge', 'on', true)")
        shop.execute("DELETE FROM order_items WHERE order_item_id = %s", (purged,))
    # the delete happened "now"; date its tombstone into the hour being loaded again, after
    # every version of the hour (a deletion follows the row's last change)
    shop.execute(
        "UPDATE lifecycle_archive.deletions SET deleted_at = %s"
        " WHERE table_name = 'order_items' AND pk = %s",
        (hour + timedelta(hours=1) - timedelta(microseconds=1), deleted),
    )

    reloaded = _load(hour)

    assert reloaded.success
    left = {
        row[0]
        for row in warehouse.execute(
            "SELECT order_item_id FROM analytics.fact_order_items WHERE order_item_id IN (%s, %s)",
            (deleted, purged),
        )
    }
    assert left == {purged}

    # tombstones outlive their hour's load by DELETIONS_KEPT, then go
    shop.execute(
        "UPDATE lifecycle_archive.deletions SET deleted_at = now() - interval '91 days'"
        " WHERE table_name = 'order_items' AND pk = %s",
        (deleted,),
    )
    assert _load(hour).success
    forgotten = shop.execute(
        "SELECT count(*) FROM lifecycle_archive.deletions WHERE pk = %s", (deleted,)
    ).fetchone()
    assert forgotten == (0,)


def test_an_hour_that_has_not_ended_is_refused(warehouse: Any) -> None:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    before = _facts(warehouse) if _has_facts(warehouse) else None
    try:
        result = _load(now)
    except DagsterUnknownPartitionError as err:  # not yet a partition at all
        assert f"{now:%Y-%m-%d-%H:%M}" in str(err)
    else:
        assert not result.success
        error = str(result.failure_data_for_node("warehouse_hourly").error)  # type: ignore[union-attr]
        assert "has not ended yet" in error
    assert (_facts(warehouse) if _has_facts(warehouse) else None) == before


def _has_facts(warehouse: Any) -> bool:
    row = warehouse.execute("SELECT to_regclass('analytics.fact_orders')").fetchone()
    return row[0] is not None


def test_redshift_loads_with_copy_from_s3_and_merge_in_one_transaction(shop: Any) -> None:
    hour = _busiest_hour(shop)
    recorder = RecordingConnection()
    with dg.build_resources({"s3": resources_for("local")["s3"]}) as r:
        s3: S3Resource = r.s3
        HourLoader(
            shop=shop,
            warehouse=recorder,
            engine="redshift",
            schema="analytics",
            s3=s3,
            pseudonym_key=b"k" * 32,
            copy_iam_role_arn="arn:aws:iam::123456789012:role/redshift-copy",
        ).run(hour)
    text = recorder.statements
    first_commit = text.index("COMMIT")
    assert all(s.startswith(("CREATE", "SELECT a.attname")) for s in text[:first_commit])
    assert "VARCHAR(80)" in next(
        s for s in text if 'TABLE IF NOT EXISTS "analytics"."fact_orders"' in s
    )
    load = text[first_commit + 1 :]
    assert load[-1] == "COMMIT" and load.count("COMMIT") == 1
    stage = next(s for s in load if s.startswith('CREATE TEMP TABLE "stage_fact_orders"'))
    # the staged Parquet's column order, not the target's (Redshift COPYs Parquet by position)
    assert stage.startswith('CREATE TEMP TABLE "stage_fact_orders" ("order_id" BIGINT, ')
    copy = next(s for s in load if s.startswith('COPY "stage_fact_orders"'))
    assert copy.startswith(
        f"COPY \"stage_fact_orders\" FROM 's3://lifecycle-local-staging/warehouse/fact_orders/hour={hour:%Y-%m-%dT%H}/part-00000.parquet'"
    )
    assert copy.endswith(
        "IAM_ROLE 'arn:aws:iam::123456789012:role/redshift-copy' FORMAT AS PARQUET"
    )
    merge = next(s for s in load if s.startswith('MERGE INTO "analytics"."fact_orders"'))
    assert 'WHEN MATCHED THEN UPDATE SET "status" = s."status"' in merge
    assert "WHEN NOT MATCHED THEN INSERT" in merge
    # first in the transaction: every target locked, in one statement and a fixed order
    assert load[0] == (
        'LOCK "analytics"."dim_users", "analytics"."dim_products", "analytics"."fact_orders", '
        '"analytics"."fact_order_items", "analytics"."dim_date"'
    )
    drop = load.index(
        'DELETE FROM "stage_fact_orders" USING "analytics"."fact_orders" t WHERE '
        '"stage_fact_orders"."order_id" = t."order_id" AND '
        '"stage_fact_orders"."updated_at" < t."updated_at"'
    )
    assert load.index(copy) < drop < load.index(merge)
    # the staged rows the warehouse holds newer are counted from the stage, before drop_older
    superseded = next(
        s for s in load if s.startswith("SELECT count(*)") and ' "stage_fact_orders" t ' in s
    )
    assert superseded.endswith(
        'FROM "stage_fact_orders" t WHERE EXISTS (SELECT 1 FROM "analytics"."fact_orders" w '
        'WHERE w."order_id" = t."order_id" AND w."updated_at" > t."updated_at")'
    )
    assert load.index(copy) < load.index(superseded) < drop
    figures = next(
        s
        for s in load
        if s.startswith("SELECT count(*)") and 'FROM "analytics"."fact_orders" t' in s
    )
    assert figures.startswith('SELECT count(*), COALESCE(sum("t"."order_id"), 0), COALESCE(sum(')
    assert figures.endswith(
        ', COALESCE((sum("t"."subtotal") * 100)::bigint, 0), '
        'COALESCE((sum("t"."shipping_fee") * 100)::bigint, 0), '
        'COALESCE((sum("t"."tax") * 100)::bigint, 0), COALESCE((sum("t"."total") * 100)::bigint, 0) '
        'FROM "analytics"."fact_orders" t WHERE EXISTS (SELECT 1 FROM "stage_fact_orders" s '
        'WHERE s."order_id" = t."order_id" AND s."updated_at" >= t."updated_at")'
    )
    assert load.index(merge) < load.index(figures) < len(load) - 1  # inside the transaction
    users = next(s for s in load if s.startswith("SELECT count(*)") and '"dim_users"' in s)
    # no user id in the warehouse: the figures take the sum of each user key's 32-bit words
    assert users.startswith(
        'SELECT count(*), COALESCE(sum((STRTOL(SUBSTRING("t"."user_key", 1, 8), 16) + '
    )
    assert 'STRTOL(SUBSTRING("t"."user_key", 57, 8), 16))), 0), ' in users
    assert not any("ANY(" in s or "pg_advisory" in s or "work_mem" in s for s in text)


def _loader(shop: Any, warehouse: Any, s3: S3Resource, schema: str) -> HourLoader:
    return HourLoader(
        shop=shop, warehouse=warehouse, engine="postgres", schema=schema, s3=s3,
        pseudonym_key=b"k" * 32, object_prefix=f"warehouse-{schema}",
    )  # fmt: skip


@pytest.fixture
def own_schema(warehouse: Any) -> Iterator[str]:
    schema = "hourly_load_edge_tests"
    warehouse.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    yield schema
    warehouse.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_an_hour_without_changes_loads_nothing_extracts_nothing_and_reconciles(
    shop: Any, warehouse: Any, local_stack: Any, own_schema: str, monkeypatch: Any
) -> None:
    extracted: list[str] = []  # tables whose rows were read (a psql child each)
    read_rows = HourSource.rows

    def rows(self: HourSource, shape: Any, table: Any, *args: Any) -> Any:
        extracted.append(table.name)
        return read_rows(self, shape, table, *args)

    monkeypatch.setattr(HourSource, "rows", rows)
    with (
        dg.build_resources({"s3": resources_for("local")["s3"]}) as r,
        psycopg.connect(local_stack[0].app_conninfo("warehouse")) as conn,
    ):
        load = _loader(shop, conn, r.s3, own_schema).run(datetime(2020, 1, 1, 3, tzinfo=UTC))
    assert extracted == []
    assert [(t.rows, t.source.rows) for t in load.tables] == [(0, 0)] * 4
    assert all(figures.rows == 0 for figures in load.figures.values())
    assert check_hour(load).success
    assert warehouse.execute(f'SELECT count(*) FROM "{own_schema}".fact_orders').fetchone() == (0,)


def test_a_failure_mid_stream_changes_nothing_and_leaves_both_connections_usable(
    shop: Any, warehouse: Any, local_stack: Any, own_schema: str, monkeypatch: Any
) -> None:
    pools: list[str] = []

    def broken(self: Any, batch: Any) -> Any:
        pools.append(pa.default_memory_pool().backend_name)
        raise RuntimeError("encoder broke")

    before = pa.default_memory_pool().backend_name
    hour = _busiest_hour(shop)
    with (
        dg.build_resources({"s3": resources_for("local")["s3"]}) as r,
        psycopg.connect(local_stack[0].app_conninfo("warehouse")) as conn,
    ):
        loader = _loader(shop, conn, r.s3, own_schema)
        monkeypatch.setattr(BinaryCopyEncoder, "encode", broken)
        with pytest.raises(RuntimeError, match="encoder broke"):
            loader.run(hour)
        monkeypatch.undo()
        # the stream allocated from malloc; the failure gave the process its own pool back
        assert pools == ["system"]
        assert pa.default_memory_pool().backend_name == before
        assert shop.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert warehouse.execute(f'SELECT count(*) FROM "{own_schema}".fact_orders').fetchone() == (
            0,
        )
        load = loader.run(hour)  # the same connections load the hour afterwards
    assert check_hour(load).success
    assert warehouse.execute(f'SELECT count(*) FROM "{own_schema}".fact_orders').fetchone()[0] > 0


def _stages_left(warehouse: Any, schema: str) -> int:
    return int(
        warehouse.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relname LIKE 'stage\\_%%'",
            (schema,),
        ).fetchone()[0]
    )


def test_stages_are_unlogged_tables_of_the_load_dropped_before_its_commit(
    shop: Any, warehouse: Any, local_stack: Any, own_schema: str, monkeypatch: Any
) -> None:
    """Unlogged, not temporary: parallel workers can scan the stage for the figures' join.
    Created in the load's transaction: a failed load leaves none behind."""
    seen: list[tuple[str, str]] = []
    figures = WarehouseTarget.figures

    def spy(self: WarehouseTarget, cur: Any, table: Any, stage: Any, bound: Any) -> Any:
        if stage is not None:
            cur.execute(
                "SELECT relpersistence::text, relnamespace::regnamespace::text FROM pg_class"
                " WHERE oid = to_regclass(%s)",
                (sql.ident(*stage),),
            )
            seen.append(cur.fetchone())
        return figures(self, cur, table, stage, bound)

    hour = _busiest_hour(shop)
    with (
        dg.build_resources({"s3": resources_for("local")["s3"]}) as r,
        psycopg.connect(local_stack[0].app_conninfo("warehouse")) as conn,
    ):
        loader = _loader(shop, conn, r.s3, own_schema)
        loader.run(hour)
        monkeypatch.setattr(WarehouseTarget, "figures", spy)
        again = loader.run(hour)  # every key is in the target now: the orders are staged
        assert {t.table.name: t.path for t in again.tables}["fact_orders"] == "staged"
        assert seen and set(seen) == {("u", own_schema)}
        assert _stages_left(warehouse, own_schema) == 0
        monkeypatch.setattr(BinaryCopyEncoder, "encode", _broken_encoder)
        with pytest.raises(RuntimeError, match="encoder broke"):
            loader.run(hour)
    assert _stages_left(warehouse, own_schema) == 0


def _broken_encoder(self: Any, batch: Any) -> Any:
    raise RuntimeError("encoder broke")


def _tamper(table: str, damage: Any) -> Any:
    """A `_transformed` that applies `damage` to `table`'s first batch (between extraction and
    the warehouse), as a faulty stage or COPY would."""
    original = HourLoader._transformed

    def transformed(self: Any, item: Any, stream: Any, schema: Any) -> Any:
        batches = original(self, item, stream, schema)
        if item.plan.table.name != table:
            yield from batches
            return
        first = next(batches)
        yield damage(first)
        yield from batches

    return transformed


def _drop_last_row(batch: pa.RecordBatch) -> pa.RecordBatch:
    return batch.slice(0, batch.num_rows - 1)


def _add_a_cent_to_the_first(column: str) -> Any:
    def damage(batch: pa.RecordBatch) -> pa.RecordBatch:
        values = batch.column(column).to_pylist()
        values[0] += Decimal("0.01")
        index = batch.schema.get_field_index(column)
        arrays = list(batch.columns)
        arrays[index] = pa.array(values, batch.schema.field(index).type)
        return pa.RecordBatch.from_arrays(arrays, schema=batch.schema)

    return damage


def _another_key_for_the_first_user(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The first user's key with its last hex digit changed (a pseudonymisation gone wrong):
    as many rows, another key."""
    keys = batch.column("user_key").to_pylist()
    keys[0] = keys[0][:-1] + ("0" if keys[0][-1] != "0" else "1")
    index = batch.schema.get_field_index("user_key")
    arrays = list(batch.columns)
    arrays[index] = pa.array(keys, batch.schema.field(index).type)
    return pa.RecordBatch.from_arrays(arrays, schema=batch.schema)


def _busiest_hour_of(shop: Any, source_table: str) -> datetime:
    row = shop.execute(
        psycopg.sql.SQL(
            "SELECT date_trunc('hour', updated_at) FROM {} GROUP BY 1 ORDER BY count(*) DESC,"
            " 1 LIMIT 1"
        ).format(psycopg.sql.Identifier(source_table))
    ).fetchone()
    return row[0].astimezone(UTC)


def test_the_dimensions_reconcile_the_users_by_their_keys_and_the_products_by_id_and_price(
    shop: Any, local_stack: Any, own_schema: str
) -> None:
    """The warehouse computes the figures of dim_users from the user keys it holds, the source
    from the HMACs of its user ids: they agree, and so do dim_products'."""
    with (
        dg.build_resources({"s3": resources_for("local")["s3"]}) as r,
        psycopg.connect(local_stack[0].app_conninfo("warehouse")) as conn,
    ):
        loader = _loader(shop, conn, r.s3, own_schema)
        loads = [loader.run(_busiest_hour_of(shop, t)) for t in ("users", "products")]
    for load, name in zip(loads, ("dim_users", "dim_products"), strict=True):
        loaded = next(item for item in load.tables if item.table.name == name)
        assert loaded.rows > 0
        assert load.figures[name] == loaded.source
        assert check_hour(load).success


@pytest.mark.parametrize(
    ("table", "source_table", "damage", "figures"),
    [
        ("fact_orders", "orders", _drop_last_row, {"rows", "pk_sum", "pk_hash_sum", "cents_total"}),
        ("fact_orders", "orders", _add_a_cent_to_the_first("total"), {"cents_total"}),
        ("dim_products", "products", _drop_last_row, {"rows", "pk_sum", "pk_hash_sum"}),
        ("dim_products", "products", _add_a_cent_to_the_first("price"), {"cents_price"}),
        ("dim_users", "users", _drop_last_row, {"rows", "pk_sum", "pk_hash_sum"}),
        ("dim_users", "users", _another_key_for_the_first_user, {"pk_sum", "pk_hash_sum"}),
    ],
)
def test_rows_lost_or_changed_on_the_way_fail_the_reconciliation_naming_the_figure(
    shop: Any,
    warehouse: Any,
    local_stack: Any,
    own_schema: str,
    monkeypatch: Any,
    table: str,
    source_table: str,
    damage: Any,
    figures: set[str],
) -> None:
    """Every table of the star schema is reconciled, dim_users by the 32-bit words of its keys
    (the warehouse holds no user id)."""
    hour = _busiest_hour_of(shop, source_table)
    monkeypatch.setattr(HourLoader, "_transformed", _tamper(table, damage))
    with (
        dg.build_resources({"s3": resources_for("local")["s3"]}) as r,
        psycopg.connect(local_stack[0].app_conninfo("warehouse")) as conn,
    ):
        load = _loader(shop, conn, r.s3, own_schema).run(hour)
    outcome = check_hour(load)
    assert not outcome.success
    failed = {line.split("(", 1)[1].split(")", 1)[0] for line in outcome.failures}
    money = next(t.money for t in TABLES if t.name == table)
    assert figures <= failed <= {"rows", "pk_sum", "pk_hash_sum", *(f"cents_{m}" for m in money)}


def test_a_load_whose_figures_disagree_is_rolled_back_before_anyone_sees_it(
    shop: Any, local_stack: Any, own_schema: str, monkeypatch: Any
) -> None:
    hour = _busiest_hour(shop)
    monkeypatch.setattr(HourLoader, "_transformed", _tamper("fact_orders", _drop_last_row))
    with (
        dg.build_resources({"s3": resources_for("local")["s3"]}) as r,
        psycopg.connect(local_stack[0].app_conninfo("warehouse")) as conn,
    ):
        loader = _loader(shop, conn, r.s3, own_schema)
        loader.reconcile = check_hour
        with pytest.raises(ReconciliationFailed, match=r"rolled back") as raised:
            loader.run(hour)
        assert not raised.value.outcome.success
        assert any("(rows)" in line for line in raised.value.outcome.failures)
        for table in ("fact_orders", "fact_order_items", "dim_users", "dim_date"):
            count = conn.execute(
                psycopg.sql.SQL("SELECT count(*) FROM {}").format(
                    psycopg.sql.Identifier(own_schema, table)
                )
            ).fetchone()
            assert count == (0,), table


def test_an_hour_off_the_hour_or_before_the_first_partition_is_refused() -> None:
    for key in ("2026-11-20-10:30", "2026-10-31-23:00", "2026-11-20 10:00"):
        with pytest.raises(dg.Failure, match=r"partition_key: '"):
            _hour(key)
    assert _hour("2026-11-20-10:00") == datetime(2026, 11, 20, 10, tzinfo=UTC)


def test_the_loader_refuses_an_hour_that_is_not_a_utc_hour(
    shop: Any, warehouse: Any, own_schema: str
) -> None:
    with dg.build_resources({"s3": resources_for("local")["s3"]}) as r:
        loader = _loader(shop, warehouse, r.s3, own_schema)
        for bad in (datetime(2026, 11, 20, 10, 30, tzinfo=UTC), datetime(2026, 11, 20, 10)):
            with pytest.raises(ValueError, match=r"^hour: .* not a UTC hour"):
                loader.run(bad)
    row = warehouse.execute("SELECT to_regnamespace(%s)", (own_schema,)).fetchone()
    assert row == (None,)  # nothing was created


def test_a_source_connection_inside_a_transaction_is_refused(
    local_stack: Any, warehouse_shop: str
) -> None:
    with psycopg.connect(local_stack[0].app_conninfo(warehouse_shop)) as shop:
        loader = HourLoader(
            shop=shop, warehouse=RecordingConnection(), engine="postgres", schema="x",
            s3=S3Resource(), pseudonym_key=b"k" * 32,
        )  # fmt: skip
        with pytest.raises(ValueError, match=r"^shop: "):
            loader.run(datetime(2020, 1, 1, tzinfo=UTC))


def test_a_warehouse_connection_in_autocommit_mode_is_refused_and_nothing_created(
    shop: Any, warehouse: Any, local_stack: Any, own_schema: str
) -> None:
    """Each statement would commit on its own: a load failing half-way would leave its stages
    (unlogged tables in the warehouse schema) and half an hour behind."""
    with (
        dg.build_resources({"s3": resources_for("local")["s3"]}) as r,
        psycopg.connect(local_stack[0].app_conninfo("warehouse"), autocommit=True) as conn,
        pytest.raises(ValueError, match=r"^warehouse: .*autocommit"),
    ):
        _loader(shop, conn, r.s3, own_schema).run(_busiest_hour(shop))
    row = warehouse.execute("SELECT to_regnamespace(%s)", (own_schema,)).fetchone()
    assert row == (None,)


def test_psql_and_psycopg_extraction_land_the_same_rows(
    shop: Any, warehouse: Any, local_stack: Any
) -> None:
    hour = _busiest_hour(shop)
    schemas = {True: "hourly_load_by_psql", False: "hourly_load_by_psycopg"}
    content = {}
    try:
        with dg.build_resources({"s3": resources_for("local")["s3"]}) as r:
            for use_psql, schema in schemas.items():
                warehouse.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                with psycopg.connect(local_stack[0].app_conninfo("warehouse")) as conn:
                    loader = _loader(shop, conn, r.s3, schema)
                    loader.use_psql = use_psql
                    load = loader.run(hour)
                assert check_hour(load).success
                content[use_psql] = [
                    warehouse.execute(
                        f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t::text)) FROM \"{schema}\".{table} t"
                    ).fetchone()
                    for table in ("fact_orders", "fact_order_items", "dim_users", "dim_products")
                ]
    finally:
        for schema in schemas.values():
            warehouse.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    assert content[True] == content[False]
    assert content[True][0][0] > 0

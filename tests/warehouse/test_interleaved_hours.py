"""Hours whose loads interleave, or load in either order: hard deletes reach the warehouse by
version (a key deleted then inserted again stays), a row deleted while an older hour was being
loaded does not come back when that load commits after the deletion's own hour, a row
changed meanwhile keeps its newer version while the older hour still reconciles, and a user
restored meanwhile stays."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import psycopg
import pytest

from lifecycle_pipelines.archive.purge import ensure_source_schema
from lifecycle_pipelines.environments import resources_for
from lifecycle_pipelines.warehouse.loader import HourLoader
from lifecycle_pipelines.warehouse.outcome import HourLoad
from lifecycle_pipelines.warehouse.quality import check_hour
from lifecycle_pipelines.warehouse.routing import Routing
from tests.conftest import private_shop

SHOP = "shop_warehouse_interleaved"


@pytest.fixture(scope="module")
def shop_db(local_stack: Any) -> str:
    return private_shop(local_stack[0], SHOP)


@pytest.fixture
def s3() -> Iterator[Any]:
    with dg.build_resources({"s3": resources_for("local")["s3"]}) as r:
        yield r.s3


@pytest.fixture
def schema(local_stack: Any, request: Any) -> Iterator[str]:
    name = f"interleaved_{request.node.name[5:30]}"

    def drop() -> None:
        with psycopg.connect(local_stack[0].app_conninfo("warehouse"), autocommit=True) as wh:
            wh.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')

    drop()
    yield name
    drop()


def _load(stack: Any, shop_db: str, s3: Any, schema: str, hour: datetime) -> HourLoad:
    with (
        psycopg.connect(stack.app_conninfo(shop_db), autocommit=True) as shop,
        psycopg.connect(stack.app_conninfo("warehouse")) as wh,
    ):
        load = HourLoader(
            shop=shop, warehouse=wh, engine="postgres", schema=schema, s3=s3,
            pseudonym_key=b"k" * 32, object_prefix=f"test-{schema}", reconcile=check_hour,
        ).run(hour)  # fmt: skip
    assert check_hour(load).success
    return load


def _held(stack: Any, schema: str, item: int) -> bool:
    with psycopg.connect(stack.app_conninfo("warehouse"), autocommit=True) as wh:
        row = wh.execute(
            f'SELECT count(*) FROM "{schema}".fact_order_items WHERE order_item_id = %s', (item,)
        ).fetchone()
    return bool(row and row[0])


def _item_and_hour(shop: Any, skip: int) -> tuple[int, datetime]:
    row = shop.execute(
        "SELECT order_item_id, date_trunc('hour', updated_at) FROM order_items"
        " ORDER BY updated_at DESC OFFSET %s LIMIT 1",
        (skip,),
    ).fetchone()
    return int(row[0]), row[1].astimezone(UTC)


def _date_tombstone(shop: Any, item: int, at: datetime) -> None:
    shop.execute(
        "UPDATE lifecycle_archive.deletions SET deleted_at = %s"
        " WHERE table_name = 'order_items' AND pk = %s",
        (at, item),
    )


def _when_the_first_snapshot_is_open(monkeypatch: Any, meanwhile: Callable[[], None]) -> None:
    """Run `meanwhile` once, when the next load has its source snapshot (before its routing
    and its locks)."""
    route = Routing.direct_tables
    done: list[bool] = []

    def routed(self: Routing, cur: Any, plans: Any) -> Any:
        if not done:
            done.append(True)
            meanwhile()
        return route(self, cur, plans)

    monkeypatch.setattr(Routing, "direct_tables", routed)


def test_a_key_deleted_then_inserted_again_stays_whichever_hour_loads_last(
    local_stack: Any, shop_db: str, s3: Any, schema: str
) -> None:
    stack = local_stack[0]
    with psycopg.connect(stack.app_conninfo(shop_db), autocommit=True) as shop:
        ensure_source_schema(shop)
        item, hour = _item_and_hour(shop, 50)
        earlier = hour - timedelta(hours=1)
        with shop.transaction():
            copy: Any = shop.execute(
                "SELECT order_item_id, order_id, product_id, quantity, unit_price, line_total,"
                " created_at FROM order_items WHERE order_item_id = %s",
                (item,),
            ).fetchone()
            shop.execute("DELETE FROM order_items WHERE order_item_id = %s", (item,))
            shop.execute(
                "INSERT INTO order_items (order_item_id, order_id, product_id, quantity,"
                " unit_price, line_total, created_at, updated_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (*copy, hour + timedelta(minutes=10)),
            )
        _date_tombstone(shop, item, earlier + timedelta(minutes=20))  # deleted the hour before
    _load(stack, shop_db, s3, schema, hour)
    assert _held(stack, schema, item)
    _load(stack, shop_db, s3, schema, earlier)  # a backfill in the other order, or a re-run
    assert _held(stack, schema, item)  # the source has it: the older deletion does not apply


def test_a_row_deleted_while_an_older_hour_loads_does_not_come_back(
    local_stack: Any, shop_db: str, s3: Any, schema: str, monkeypatch: Any
) -> None:
    """H1's load has its snapshot (item K still there) when K is deleted, and H2's load (the
    deletion's hour) runs and commits before H1's takes its locks."""
    stack = local_stack[0]
    with psycopg.connect(stack.app_conninfo(shop_db), autocommit=True) as shop:
        ensure_source_schema(shop)
        item, h1 = _item_and_hour(shop, 200)
    h2 = h1 + timedelta(hours=1)
    later: list[HourLoad] = []

    def deleted_and_its_hour_loaded() -> None:
        with psycopg.connect(stack.app_conninfo(shop_db), autocommit=True) as other:
            other.execute("DELETE FROM order_items WHERE order_item_id = %s", (item,))
            _date_tombstone(other, item, h2 + timedelta(minutes=5))
        later.append(_load(stack, shop_db, s3, schema, h2))

    _when_the_first_snapshot_is_open(monkeypatch, deleted_and_its_hour_loaded)
    with psycopg.connect(stack.app_conninfo(shop_db), autocommit=True) as shop:
        items_of_h1 = shop.execute(
            "SELECT count(*) FROM order_items WHERE updated_at >= %s AND updated_at < %s",
            (h1, h2),
        ).fetchone()
    load = _load(stack, shop_db, s3, schema, h1)
    assert later  # H2 committed first
    loaded = next(t for t in load.tables if t.table.name == "fact_order_items")
    assert (loaded.rows,) == items_of_h1  # H1's snapshot still had K, and loaded it
    assert not _held(stack, schema, item)  # but H2's deletion, kept in the warehouse, applied


def test_a_row_changed_while_an_older_hour_loads_keeps_its_newer_version_and_both_reconcile(
    local_stack: Any, shop_db: str, s3: Any, monkeypatch: Any, schema: str
) -> None:
    """As above with an UPDATE: H2 writes K's newer version first; H1's MERGE rightly keeps
    it, and H1's figures count K from its stage (superseded), so H1 reconciles too."""
    stack = local_stack[0]
    with psycopg.connect(stack.app_conninfo(shop_db), autocommit=True) as shop:
        ensure_source_schema(shop)
        item, h1 = _item_and_hour(shop, 600)
    h2 = h1 + timedelta(hours=1)

    def changed_and_its_hour_loaded() -> None:
        with psycopg.connect(stack.app_conninfo(shop_db), autocommit=True) as other:
            other.execute("ALTER TABLE order_items DISABLE TRIGGER order_items_set_updated_at")
            other.execute(
                "UPDATE order_items SET quantity = quantity + 1, updated_at = %s"
                " WHERE order_item_id = %s",
                (h2 + timedelta(minutes=5), item),
            )
            other.execute("ALTER TABLE order_items ENABLE TRIGGER order_items_set_updated_at")
        _load(stack, shop_db, s3, schema, h2)

    _when_the_first_snapshot_is_open(monkeypatch, changed_and_its_hour_loaded)
    _load(stack, shop_db, s3, schema, h1)  # reconciles (`_load` asserts it)
    with (
        psycopg.connect(stack.app_conninfo(shop_db), autocommit=True) as shop,
        psycopg.connect(stack.app_conninfo("warehouse"), autocommit=True) as wh,
    ):
        query = "SELECT quantity, updated_at FROM {} WHERE order_item_id = %s"
        source = shop.execute(query.format("order_items"), (item,)).fetchone()
        held = wh.execute(query.format(f'"{schema}".fact_order_items'), (item,)).fetchone()
    assert held == source  # the newer version


def test_a_user_restored_while_the_hour_of_their_soft_delete_loads_stays(
    local_stack: Any, shop_db: str, s3: Any, schema: str, monkeypatch: Any
) -> None:
    """H1's snapshot has user U soft-deleted; U is restored, and H2 (the restore's hour) loads
    and commits before H1 takes its locks. H1 leaves U out and deletes only U's rows older
    than the soft delete: the restored row, newer, stays."""
    stack = local_stack[0]
    h1 = datetime(2025, 3, 3, 10, tzinfo=UTC)
    h2 = h1 + timedelta(hours=1)
    with psycopg.connect(stack.app_conninfo(shop_db), autocommit=True) as shop:
        ensure_source_schema(shop)
        row = shop.execute("SELECT max(user_id) FROM users").fetchone()
        assert row is not None
        user = int(row[0])
        _stamp_user(shop, user, deleted=True, at=h1 + timedelta(minutes=10))

    def restored_and_its_hour_loaded() -> None:
        with psycopg.connect(stack.app_conninfo(shop_db), autocommit=True) as other:
            _stamp_user(other, user, deleted=False, at=h2 + timedelta(minutes=5))
        _load(stack, shop_db, s3, schema, h2)

    _when_the_first_snapshot_is_open(monkeypatch, restored_and_its_hour_loaded)
    load = _load(stack, shop_db, s3, schema, h1)
    assert next(t for t in load.tables if t.table.name == "dim_users").excluded == 1
    key = hmac.new(b"k" * 32, str(user).encode(), hashlib.sha256).hexdigest()
    with psycopg.connect(stack.app_conninfo("warehouse"), autocommit=True) as wh:
        held = wh.execute(
            f'SELECT updated_at FROM "{schema}".dim_users WHERE user_key = %s', (key,)
        ).fetchall()
    assert held == [(h2 + timedelta(minutes=5),)]


def _stamp_user(shop: Any, user: int, *, deleted: bool, at: datetime) -> None:
    """Soft delete (or restore) the user, stamped at `at` (the trigger would stamp now(), an
    hour that has not ended yet)."""
    shop.execute("ALTER TABLE users DISABLE TRIGGER USER")
    try:
        shop.execute(
            "UPDATE users SET deleted_at = %s, updated_at = %s WHERE user_id = %s",
            (at if deleted else None, at, user),
        )
    finally:
        shop.execute("ALTER TABLE users ENABLE TRIGGER USER")

"""Warehouse erasure against the local PostgreSQL warehouse, the exclusion of soft-deleted users
from hourly loads, and the Redshift SQL both issue.

These tests use a shop database and a warehouse schema of their own, so the loads and erasures
here never touch what the other warehouse tests read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql as psql

from lifecycle_pipelines.erasure.stores import Subject
from lifecycle_pipelines.local.stack import LocalStack, StackInfo
from lifecycle_pipelines.warehouse.eraser import WarehouseEraser
from lifecycle_pipelines.warehouse.loader import HourLoader
from lifecycle_pipelines.warehouse.model import Engine
from lifecycle_pipelines.warehouse.outcome import HourLoad
from lifecycle_pipelines.warehouse.quality import check_hour
from tests.conftest import private_shop
from tests.warehouse.recording import RecordingConnection

SHOP = "shop_warehouse_erasure_tests"
SCHEMA = "erasure_tests"
DIM_USERS = f'"{SCHEMA}"."dim_users"'
FACT_ORDERS = f'"{SCHEMA}"."fact_orders"'


@pytest.fixture(scope="module")
def erasure_shop(local_stack: tuple[LocalStack, StackInfo]) -> str:
    return private_shop(local_stack[0], SHOP)


@pytest.fixture
def shop(local_stack: Any, erasure_shop: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(local_stack[0].app_conninfo(erasure_shop), autocommit=True) as conn:
        yield conn


@pytest.fixture
def warehouse_info(local_stack: Any) -> str:
    return str(local_stack[0].app_conninfo("warehouse"))


@pytest.fixture
def warehouse(warehouse_info: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the warehouse, with this module's schema dropped around."""
    with psycopg.connect(warehouse_info, autocommit=True) as conn:
        drop = psql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psql.Identifier(SCHEMA))
        conn.execute(drop)
        yield conn
        conn.execute(drop)


@pytest.fixture
def load_hour(
    shop: Any, warehouse_info: str, services: tuple[Any, bytes]
) -> Callable[..., HourLoad]:
    """Load one hour of the module's shop into the module's warehouse schema."""
    s3, key = services

    def load(hour: datetime, *, warehouse: Any = None, engine: Engine = "postgres") -> HourLoad:
        with psycopg.connect(warehouse_info) as conn:
            return HourLoader(
                shop=shop,
                warehouse=conn if warehouse is None else warehouse,
                engine=engine,
                schema=SCHEMA,
                s3=s3,
                pseudonym_key=key,
                copy_iam_role_arn="arn:aws:iam::123456789012:role/redshift-copy",
            ).run(hour)

    return load


def _hour(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def _busiest_hour(shop: Any, offset: int = 0) -> datetime:
    row = shop.execute(
        "SELECT date_trunc('hour', updated_at) FROM orders GROUP BY 1 ORDER BY count(*) DESC,"
        " 1 LIMIT 1 OFFSET %s",
        (offset,),
    ).fetchone()
    return _hour(row[0])


def _user_of(shop: Any, hour: datetime, *, last: bool = False) -> tuple[int, datetime]:
    """A live user with an order changed in `hour`, and the hour of the user's own change."""
    row = shop.execute(
        "SELECT u.user_id, u.updated_at FROM users u JOIN orders o USING (user_id)"
        " WHERE o.updated_at >= %s AND o.updated_at < %s AND u.deleted_at IS NULL"
        f" ORDER BY u.user_id {'DESC' if last else 'ASC'} LIMIT 1",
        (hour, hour + timedelta(hours=1)),
    ).fetchone()
    return int(row[0]), _hour(row[1])


def _count(warehouse: Any, query: str, params: tuple[Any, ...] = ()) -> int:
    return int(warehouse.execute(query, params).fetchone()[0])


def _snapshot(warehouse: Any) -> tuple[Any, ...]:
    """Whole-table figures: dim_users rows, fact rows, keyed fact rows, order id and money sums."""
    return tuple(
        warehouse.execute(
            f"SELECT (SELECT count(*) FROM {DIM_USERS}), count(*), count(user_key),"
            f" sum(order_id), sum(total) FROM {FACT_ORDERS}"
        ).fetchone()
    )


def test_erase_removes_the_dimension_row_and_unlinks_the_facts(
    shop: Any,
    warehouse: Any,
    warehouse_info: str,
    services: tuple[Any, bytes],
    load_hour: Callable[..., HourLoad],
    caplog: pytest.LogCaptureFixture,
) -> None:
    hour = _busiest_hour(shop)
    user, user_hour = _user_of(shop, hour)
    load_hour(hour)
    load_hour(user_hour)
    subject = Subject.from_user_id(str(user), services[1])
    mine = f"SELECT count(*) FROM {FACT_ORDERS} WHERE user_key = %s"
    orders = _count(warehouse, mine, (subject.user_key,))
    assert orders >= 1  # the load applied the same pseudonym
    in_dim = f"SELECT count(*) FROM {DIM_USERS} WHERE user_key = %s"
    assert _count(warehouse, in_dim, (subject.user_key,)) == 1
    order_ids = [
        r[0]
        for r in warehouse.execute(
            f"SELECT order_id FROM {FACT_ORDERS} WHERE user_key = %s", (subject.user_key,)
        )
    ]
    before = _snapshot(warehouse)
    eraser = WarehouseEraser(
        lambda: psycopg.connect(warehouse_info), schema=SCHEMA, engine="postgres"
    )

    dry = eraser.erase(subject, dry_run=True)
    assert [(r.store, r.found, r.changed) for r in dry] == [
        ("warehouse.dim_users", 1, 0),
        ("warehouse.fact_orders", orders, 0),
        ("warehouse.source_deletions", 0, 0),
    ]
    assert _snapshot(warehouse) == before

    with caplog.at_level(logging.INFO, logger="lifecycle_pipelines.warehouse.eraser"):
        done = eraser.erase(subject, dry_run=False)
    assert [(r.store, r.found, r.changed) for r in done] == [
        ("warehouse.dim_users", 1, 1),
        ("warehouse.fact_orders", orders, orders),
        ("warehouse.source_deletions", 0, 0),
    ]
    assert subject.user_key not in caplog.text
    assert f"warehouse.fact_orders found {orders} changed {orders}" in caplog.text
    after = _snapshot(warehouse)
    # one dimension row and the subject's keys gone; every order (and its money) still there
    assert after == (before[0] - 1, before[1], before[2] - orders, before[3], before[4])
    assert warehouse.execute(
        f"SELECT count(*), count(user_key) FROM {FACT_ORDERS} WHERE order_id = ANY(%s)",
        (order_ids,),
    ).fetchone() == (orders, 0)
    assert [(r.store, r.count) for r in eraser.remaining(subject)] == [
        ("warehouse.dim_users", 0),
        ("warehouse.fact_orders", 0),
        ("warehouse.source_deletions", 0),
    ]

    again = eraser.erase(subject, dry_run=False)
    assert [(r.found, r.changed) for r in again] == [(0, 0), (0, 0), (0, 0)]
    assert _snapshot(warehouse) == after


def test_erase_before_any_load_finds_nothing_and_keeps_a_given_connection(
    warehouse: Any, services: tuple[Any, bytes]
) -> None:
    subject = Subject.from_user_id("42", services[1])
    eraser = WarehouseEraser(warehouse, schema=SCHEMA, engine="postgres")
    results = eraser.erase(subject, dry_run=False)
    assert [(r.store, r.found, r.changed) for r in results] == [
        ("warehouse.dim_users", 0, 0),
        ("warehouse.fact_orders", 0, 0),
        ("warehouse.source_deletions", 0, 0),
    ]
    assert all("no such table" in r.note for r in results)
    assert [(r.count, bool(r.note)) for r in eraser.remaining(subject)] == [(0, True)] * 3
    assert not warehouse.closed and warehouse.autocommit  # a given connection is left as it was


def test_bad_input_is_refused_naming_the_field(warehouse: Any) -> None:
    with pytest.raises(ValueError, match="engine"):
        WarehouseEraser(warehouse, schema=SCHEMA, engine="mysql")  # type: ignore[arg-type]
    eraser = WarehouseEraser(warehouse, schema=SCHEMA, engine="postgres")
    with pytest.raises(ValueError, match=r"subject\.user_key") as err:
        eraser.erase(Subject("7", "7' OR '1'='1"), dry_run=False)
    assert "OR" not in str(err.value)


def _soft_delete(shop: Any, user: int, at: datetime) -> int:
    """Soft delete the user as erasure does, stamped at `at`, and move one of their orders into
    the same hour; returns that order's id."""
    shop.execute("ALTER TABLE users DISABLE TRIGGER USER")
    shop.execute("ALTER TABLE orders DISABLE TRIGGER USER")
    try:  # the triggers would stamp now(), an hour that has not ended yet
        shop.execute(
            "UPDATE users SET deleted_at = %s, updated_at = %s, full_name = '[erased]',"
            " email = 'erased+' || user_id || '@invalid.example', phone = NULL"
            " WHERE user_id = %s",
            (at, at, user),
        )
        row = shop.execute(
            "UPDATE orders SET status = 'returned', updated_at = %s WHERE order_id ="
            " (SELECT min(order_id) FROM orders WHERE user_id = %s) RETURNING order_id",
            (at + timedelta(minutes=1), user),
        ).fetchone()
    finally:
        shop.execute("ALTER TABLE users ENABLE TRIGGER USER")
        shop.execute("ALTER TABLE orders ENABLE TRIGGER USER")
    return int(row[0])


def _erasure_hour(hours_ago: int) -> datetime:
    """A closed hour after the seeded data, for soft deletes (one test, one hour)."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours_ago)


def test_a_soft_deleted_user_is_excluded_from_loads(
    shop: Any,
    warehouse: Any,
    services: tuple[Any, bytes],
    load_hour: Callable[..., HourLoad],
) -> None:
    hour = _busiest_hour(shop, offset=1)
    user, user_hour = _user_of(shop, hour, last=True)
    load_hour(hour)
    load_hour(user_hour)
    key = Subject.from_user_id(str(user), services[1]).user_key
    in_dim = f"SELECT count(*) FROM {DIM_USERS} WHERE user_key = %s"
    assert _count(warehouse, in_dim, (key,)) == 1

    erased_at = _erasure_hour(2) + timedelta(minutes=10)
    order = _soft_delete(shop, user, erased_at)
    load = load_hour(_hour(erased_at))

    assert warehouse.execute(
        f"SELECT user_key, status FROM {FACT_ORDERS} WHERE order_id = %s", (order,)
    ).fetchone() == (None, "returned")
    assert _count(warehouse, in_dim, (key,)) == 0
    tables = {t.table.name: t for t in load.tables}
    assert (tables["dim_users"].rows, tables["dim_users"].excluded) == (0, 1)
    assert tables["dim_users"].source.rows == 0  # reconciled like with like
    assert tables["fact_orders"].rows == tables["fact_orders"].source.rows >= 1
    assert tables["fact_orders"].excluded >= 1
    outcome = check_hour(load)
    assert outcome.success and outcome.evaluated > 0, outcome.failures
    # re-running the hour, or reloading the user's earlier hour, never brings them back
    load_hour(_hour(erased_at))
    load_hour(user_hour)
    assert _count(warehouse, in_dim, (key,)) == 0
    unlinked = f"SELECT count(*) FROM {FACT_ORDERS} WHERE order_id = %s AND user_key IS NULL"
    assert _count(warehouse, unlinked, (order,)) == 1
    # the loads keep the soft delete among their deletions (by the user's key) until the
    # erasure removes it with the rest: nothing of the subject is left behind the certificate
    recorded = f'SELECT count(*) FROM "{SCHEMA}".source_deletions WHERE row_key = %s'
    assert _count(warehouse, recorded, (key,)) == 1
    eraser = WarehouseEraser(warehouse, schema=SCHEMA, engine="postgres")
    erased = eraser.erase(Subject(str(user), key), dry_run=False)
    assert ("warehouse.source_deletions", 1, 1) in [(r.store, r.found, r.changed) for r in erased]
    assert _count(warehouse, recorded, (key,)) == 0
    assert all(r.count == 0 for r in eraser.remaining(Subject(str(user), key)))


KEY = "ab" * 32
REDSHIFT_ERASE = [
    (
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
        " AND table_name IN (%s, %s, %s)",
        ("analytics", "dim_users", "fact_orders", "source_deletions"),
    ),
    ('SELECT count(*) FROM "analytics"."dim_users" WHERE "user_key" = %s', (KEY,)),
    ('DELETE FROM "analytics"."dim_users" WHERE "user_key" = %s', (KEY,)),
    ('SELECT count(*) FROM "analytics"."fact_orders" WHERE "user_key" = %s', (KEY,)),
    ('UPDATE "analytics"."fact_orders" SET "user_key" = NULL WHERE "user_key" = %s', (KEY,)),
    ('SELECT count(*) FROM "analytics"."source_deletions" WHERE "row_key" = %s', (KEY,)),
    ('DELETE FROM "analytics"."source_deletions" WHERE "row_key" = %s', (KEY,)),
    ("COMMIT", None),
]


def test_redshift_erasure_sql_in_one_transaction() -> None:
    recorder = RecordingConnection(found=2)
    eraser = WarehouseEraser(recorder, schema="analytics", engine="redshift")
    results = eraser.erase(Subject("7", KEY), dry_run=False)
    assert recorder.calls == REDSHIFT_ERASE
    assert [(r.store, r.found, r.changed) for r in results] == [
        ("warehouse.dim_users", 2, 2),
        ("warehouse.fact_orders", 2, 2),
        ("warehouse.source_deletions", 2, 2),
    ]

    dry = RecordingConnection(found=3)
    results = WarehouseEraser(dry, schema="analytics", engine="redshift").erase(
        Subject("7", KEY), dry_run=True
    )
    assert not any(s.startswith(("DELETE", "UPDATE")) for s in dry.statements)
    assert dry.statements[-1] == "ROLLBACK" and "COMMIT" not in dry.statements
    assert [(r.found, r.changed) for r in results] == [(3, 0), (3, 0), (3, 0)]

    remaining = RecordingConnection(found=0)
    counts = WarehouseEraser(remaining, schema="analytics", engine="redshift").remaining(
        Subject("7", KEY)
    )
    assert [(r.store, r.count) for r in counts] == [
        ("warehouse.dim_users", 0),
        ("warehouse.fact_orders", 0),
        ("warehouse.source_deletions", 0),
    ]
    assert remaining.statements[-1] == "ROLLBACK" and "COMMIT" not in remaining.statements


def test_redshift_erasure_rolls_back_on_failure_and_closes_its_own_connection() -> None:
    recorder = RecordingConnection(found=1, fail_on="UPDATE")
    eraser = WarehouseEraser(lambda: recorder, schema="analytics", engine="redshift")
    with pytest.raises(RuntimeError):
        eraser.erase(Subject("7", KEY), dry_run=False)
    assert recorder.statements[-2:] == ["ROLLBACK", "CLOSE"]
    assert "COMMIT" not in recorder.statements


def test_redshift_load_deletes_soft_deleted_users_in_the_load_transaction(
    shop: Any, load_hour: Callable[..., HourLoad], services: tuple[Any, bytes]
) -> None:
    hour = _busiest_hour(shop, offset=2)
    user, _ = _user_of(shop, hour)
    erased_at = _erasure_hour(3) + timedelta(minutes=20)
    _soft_delete(shop, user, erased_at)
    recorder = RecordingConnection(found=0)
    load_hour(_hour(erased_at), warehouse=recorder, engine="redshift")
    text = recorder.statements
    load = text[text.index("COMMIT") + 1 :]
    assert load[-1] == "COMMIT" and load.count("COMMIT") == 1
    user_key = Subject.from_user_id(str(user), services[1]).user_key
    # the soft delete is recorded in the warehouse, by the version that carried it ...
    kept = [
        c for c in recorder.calls if c[0].startswith(f'INSERT INTO "{SCHEMA}"."source_deletions"')
    ]
    assert [params[:2] for _, params in kept] == [("dim_users", user_key)]  # one row
    # ... and deletes the user's older rows, after it, in the same transaction: by version,
    # never by key alone (a restored user's newer row stays)
    deletes = [i for i, s in enumerate(load) if s.startswith(f'DELETE FROM "{SCHEMA}"."dim_users"')]
    assert len(deletes) == 1 and load.index(kept[0][0]) < deletes[0]
    delete = load[deletes[0]]
    assert f'USING "{SCHEMA}"."source_deletions" d' in delete
    assert '"dim_users"."updated_at" < d.deleted_at' in delete
    assert not any("ANY(" in s for s in load)

"""A backfill may load hours in parallel: concurrent loads (each with its own connections) into
one warehouse all succeed, land exactly what loading the same hours one after the other lands,
and the same hour loaded twice at once lands once.

The concurrency is forced, not hoped for: the test holds the lock the loads queue on (the DDL
advisory lock, or the first target table's lock) until every load is observed waiting for it in
`pg_locks`, then releases it. Nothing waits for a duration.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import psycopg
import pytest
from psycopg import sql as psql

from lifecycle_pipelines.local.stack import LocalStack, StackInfo
from lifecycle_pipelines.warehouse.loader import HourLoader
from lifecycle_pipelines.warehouse.model import TABLES
from lifecycle_pipelines.warehouse.outcome import HourLoad
from lifecycle_pipelines.warehouse.quality import check_hour
from lifecycle_pipelines.warehouse.target import DDL_LOCK_NAMESPACE, advisory_key
from tests.conftest import private_shop

SHOP = "shop_warehouse_backfill_tests"
SERIAL = "backfill_serial"
PARALLEL = "backfill_parallel"
WAIT_SECONDS = 120


@pytest.fixture(scope="module")
def backfill_shop(local_stack: tuple[LocalStack, StackInfo]) -> str:
    return private_shop(local_stack[0], SHOP)


@pytest.fixture
def admin(local_stack: Any) -> Iterator[psycopg.Connection[Any]]:
    """The test's own warehouse connection; both schemas are dropped around each test."""
    with psycopg.connect(local_stack[0].app_conninfo("warehouse"), autocommit=True) as conn:
        for schema in (SERIAL, PARALLEL):
            conn.execute(
                psql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psql.Identifier(schema))
            )
        yield conn
        for schema in (SERIAL, PARALLEL):
            conn.execute(
                psql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(psql.Identifier(schema))
            )


@pytest.fixture
def load(
    local_stack: Any, backfill_shop: str, services: tuple[Any, bytes]
) -> Callable[[str, datetime], HourLoad]:
    """Load one hour into a schema with connections of its own (as a backfill run does)."""
    stack: LocalStack = local_stack[0]
    s3, key = services

    def run(schema: str, hour: datetime) -> HourLoad:
        with (
            psycopg.connect(stack.app_conninfo(backfill_shop), autocommit=True) as shop,
            psycopg.connect(stack.app_conninfo("warehouse")) as warehouse,
        ):
            return HourLoader(
                shop=shop, warehouse=warehouse, engine="postgres", schema=schema, s3=s3,
                pseudonym_key=key, object_prefix=f"warehouse-{schema}",
            ).run(hour)  # fmt: skip

    return run


def _hours_of_busy_days(local_stack: Any, shop_db: str, days: int) -> list[datetime]:
    """The busiest hour of each of the `days` busiest days (a backfill across days)."""
    with psycopg.connect(local_stack[0].app_conninfo(shop_db)) as shop:
        counts = shop.execute(
            "SELECT date_trunc('hour', updated_at), count(*) FROM orders GROUP BY 1 ORDER BY 1"
        ).fetchall()
    per_day: dict[Any, list[tuple[int, datetime]]] = {}
    for hour, count in counts:
        per_day.setdefault(hour.astimezone(UTC).date(), []).append((count, hour.astimezone(UTC)))
    busiest = sorted(per_day.values(), key=lambda hours: -sum(c for c, _ in hours))[:days]
    return [max(hours, key=lambda item: (item[0], -item[1].timestamp()))[1] for hours in busiest]


def _content(admin: Any, schema: str) -> dict[str, tuple[Any, ...]]:
    """Each table's row count and a digest of its whole content, in key order."""
    result = {}
    for table, key in [(t.name, t.key) for t in TABLES] + [("dim_date", "date_key")]:
        query = psql.SQL(
            "SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t.{k}), ''))"
            " FROM {rel} t"
        ).format(k=psql.Identifier(key), rel=psql.Identifier(schema, table))
        result[table] = tuple(admin.execute(query).fetchone())
    return result


class _Loads:
    """Loads running at once, one thread each (each opens its own connections)."""

    def __init__(self, jobs: list[Callable[[], HourLoad]]) -> None:
        self.results: list[Any] = [None] * len(jobs)
        self.threads = [
            threading.Thread(target=self._run, args=(i, job), daemon=True)
            for i, job in enumerate(jobs)
        ]
        for thread in self.threads:
            thread.start()

    def _run(self, index: int, job: Callable[[], HourLoad]) -> None:
        try:
            self.results[index] = job()
        except BaseException as err:  # reported by join()
            self.results[index] = err

    def join(self) -> list[HourLoad]:
        for thread in self.threads:
            thread.join(WAIT_SECONDS)
            assert not thread.is_alive(), "a load did not finish"
        errors = [r for r in self.results if isinstance(r, BaseException)]
        assert not errors, errors
        return list(self.results)


def _wait_for_waiters(admin: Any, query: str, params: tuple[Any, ...], count: int) -> None:
    """Poll pg_locks until `count` sessions wait on the lock (an observed state, not a delay)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while admin.execute(query, params).fetchone()[0] < count:
        assert time.monotonic() < deadline, f"fewer than {count} loads reached the lock"
        time.sleep(0.01)


def _assert_reconciled(loads: list[HourLoad]) -> None:
    for item in loads:
        outcome = check_hour(item)
        assert outcome.success and outcome.evaluated > 0, outcome.failures


def test_backfill_hours_race_to_create_the_tables_and_merge_like_one_after_the_other(
    local_stack: Any, backfill_shop: str, admin: Any, load: Callable[[str, datetime], HourLoad]
) -> None:
    first, second, third = _hours_of_busy_days(local_stack, backfill_shop, 3)
    assert len({first.date(), second.date(), third.date()}) == 3
    for hour in (first, second, third):
        load(SERIAL, hour)

    # a fresh schema: four loads (the first hour twice) queue on the DDL lock the test holds
    ddl = advisory_key(DDL_LOCK_NAMESPACE, PARALLEL)
    admin.execute("SELECT pg_advisory_lock(%s)", (ddl,))
    try:
        running = _Loads([partial(load, PARALLEL, h) for h in (first, second, third, first)])
        _wait_for_waiters(
            admin,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1",
            ((ddl >> 32) & 0xFFFFFFFF, ddl & 0xFFFFFFFF),
            4,
        )
    finally:
        admin.execute("SELECT pg_advisory_unlock(%s)", (ddl,))
    loads = running.join()

    assert _content(admin, PARALLEL) == _content(admin, SERIAL)
    rows = next(t.rows for t in loads[0].tables if t.table.name == "fact_orders")
    assert rows > 0
    assert [t.rows for t in loads[3].tables] == [t.rows for t in loads[0].tables]
    _assert_reconciled(loads)


def test_concurrent_merges_of_different_and_identical_hours_serialise_on_the_table_locks(
    local_stack: Any, backfill_shop: str, admin: Any, load: Callable[[str, datetime], HourLoad]
) -> None:
    zero, first, second, third = _hours_of_busy_days(local_stack, backfill_shop, 4)
    for hour in (zero, first, second, third):
        load(SERIAL, hour)
    load(PARALLEL, zero)  # the tables exist: the loads below stage, then queue for the merge

    dim_users = f'"{PARALLEL}"."dim_users"'
    with admin.transaction():
        admin.execute(f"LOCK TABLE {dim_users} IN SHARE ROW EXCLUSIVE MODE")
        hours = (first, second, third, second)
        running = _Loads([partial(load, PARALLEL, h) for h in hours])
        _wait_for_waiters(
            admin,
            "SELECT count(*) FROM pg_locks WHERE relation = %s::regclass AND NOT granted",
            (dim_users,),
            len(hours),
        )
        at_merge = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE %s",
            (f"LOCK TABLE {dim_users}, %",),
        ).fetchone()[0]
        assert at_merge == len(hours)  # each load staged its hour and waits to merge it
    loads = running.join()

    assert _content(admin, PARALLEL) == _content(admin, SERIAL)
    _assert_reconciled(loads)
    for table in ("fact_orders", "fact_order_items"):  # no row twice, whatever the order
        duplicated = admin.execute(
            psql.SQL("SELECT count(*) - count(DISTINCT {k}) FROM {rel}").format(
                k=psql.Identifier(next(t.key for t in TABLES if t.name == table)),
                rel=psql.Identifier(PARALLEL, table),
            )
        ).fetchone()[0]
        assert duplicated == 0

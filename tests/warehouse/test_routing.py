"""Which way each table's hour goes (direct, split, staged), with fakes for both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from lifecycle_pipelines.archive.stats import ReconStats
from lifecycle_pipelines.warehouse.model import DIM_USERS, FACT_ORDER_ITEMS, FACT_ORDERS
from lifecycle_pipelines.warehouse.plan import TablePlan
from lifecycle_pipelines.warehouse.routing import Routing, lock_order
from lifecycle_pipelines.warehouse.source import HourSource
from lifecycle_pipelines.warehouse.target import Bound

HOUR = datetime(2026, 11, 20, 9, tzinfo=UTC)


class FakeSource:
    """The hour's keys per source table; counts every pass over them."""

    def __init__(self, keys: dict[str, list[int]]) -> None:
        self.keys = keys
        self.passes: list[tuple[str, Any]] = []

    def figures_and_profile(
        self, table: Any, hour: datetime, end: datetime, bound: Any
    ) -> tuple[ReconStats, int]:
        self.passes.append((table.name, bound))
        keys = self.keys[table.name]
        stats = ReconStats(rows=len(keys), pk_sum=sum(keys), pk_hash_sum=0)
        return stats, sum(1 for k in keys if k > bound)


class FakeTarget:
    """Greatest keys per table, as read before and after the lock (a concurrent load may have
    committed in between)."""

    def __init__(self, before: dict[str, Any], after: dict[str, Any] | None = None) -> None:
        self.before = before
        self.after = before if after is None else after
        self.locked: list[list[str]] = []

    def greatest_key(self, cur: Any, table: Any) -> Bound:
        return Bound((self.after if self.locked else self.before).get(table.name))

    def lock(self, cur: Any, tables: list[str]) -> None:
        self.locked.append(tables)


def _plans() -> list[TablePlan]:
    return [TablePlan(t, [], [], []) for t in (FACT_ORDERS, FACT_ORDER_ITEMS, DIM_USERS)]


def _routing(source: FakeSource, target: FakeTarget) -> Routing:
    return Routing(source, target, HOUR, HOUR + timedelta(hours=1))  # type: ignore[arg-type]


def test_routes_follow_the_share_of_keys_above_the_bound_and_keep_the_source_figures() -> None:
    source = FakeSource({"fact_orders": [5, 11, 12], "fact_order_items": [1, 2, 30]})
    target = FakeTarget({"fact_orders": 10, "fact_order_items": 20})
    routing = _routing(source, target)
    direct = routing.direct_tables(None, _plans())
    # 2 of 3 orders above 10: split; 1 of 3 items above 20: staged (not direct); users: derived
    assert direct == {"fact_orders": (Bound(10), True)}
    assert target.locked == [lock_order(_plans())]
    assert lock_order(_plans())[-1] == "dim_date"
    # one pass per table, and its figures kept for the load
    assert source.passes == [("fact_orders", 10), ("fact_order_items", 20)]
    assert routing.figures["fact_orders"].pk_sum == 28
    assert routing.figures["fact_order_items"].rows == 3


def test_an_empty_target_is_direct_without_a_pass_and_nothing_routable_takes_no_lock() -> None:
    source = FakeSource({"fact_orders": [1, 2], "fact_order_items": [1]})
    routing = _routing(source, FakeTarget({"fact_order_items": 5}))
    direct = routing.direct_tables(None, _plans())
    assert direct == {"fact_orders": (Bound(None), False)}
    assert source.passes == [("fact_order_items", 5)]  # an empty target needs no count
    assert "fact_orders" not in routing.figures  # computed beside the stream instead

    unroutable = FakeTarget({"fact_orders": 9, "fact_order_items": 9})
    staged = _routing(FakeSource({"fact_orders": [1, 2], "fact_order_items": [3]}), unroutable)
    assert staged.direct_tables(None, _plans()) == {}
    assert unroutable.locked == []


def test_a_bound_moved_by_a_concurrent_load_is_routed_again_under_the_lock() -> None:
    source = FakeSource({"fact_orders": [11, 12], "fact_order_items": [1]})
    # before the lock every order is above 10; another load committed up to 11 meanwhile
    target = FakeTarget(
        {"fact_orders": 10, "fact_order_items": 5}, {"fact_orders": 11, "fact_order_items": 5}
    )
    direct = _routing(source, target).direct_tables(None, _plans())
    assert direct == {"fact_orders": (Bound(11), True)}  # 1 of 2 above 11: split
    assert source.passes == [("fact_orders", 10), ("fact_order_items", 5), ("fact_orders", 11)]


def test_the_routing_pass_refuses_a_table_keyed_by_a_derived_key() -> None:
    with pytest.raises(ValueError, match="dim_users: its key user_key is not a source column"):
        HourSource(shop=None).figures_and_profile(DIM_USERS, HOUR, HOUR, None)

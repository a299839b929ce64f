"""The shop data generator: deterministic for a seed, consistent, loaded with COPY."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import psycopg
import pytest

from lifecycle_pipelines.local.seed import ShopGenerator, ShopSize, seed_shop
from tests.conftest import TEST_SIZE

SMALL = ShopSize(users=50, products=30, orders=400, chunk_orders=150, dynamodb_items=10)


def _generate(size: ShopSize) -> list[object]:
    gen = ShopGenerator(size)
    tables: list[object] = [gen.brands(), gen.categories(), gen.products(), gen.inventory()]
    times, users = gen._order_plan()
    first = np.full(size.users, gen.end_s, dtype=np.int64)
    np.minimum.at(first, users - 1, times)
    people = gen.users(first)
    addresses = gen.addresses(people)
    tables += [people, addresses]
    for orders, items in gen.order_chunks(times, users, addresses):
        tables += [orders, items]
    tables += list(gen.activity_chunks())
    tables += list(gen.dynamodb_items())
    return tables


def test_same_seed_same_data() -> None:
    first, second = _generate(SMALL), _generate(SMALL)
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert a == b


def test_other_seed_other_data() -> None:
    first, other = _generate(SMALL), _generate(replace(SMALL, seed=SMALL.seed + 1))
    assert first[4] != other[4]  # users


def test_orders_span_the_months_with_growth() -> None:
    gen = ShopGenerator(replace(SMALL, orders=20_000))
    times, _ = gen._order_plan()
    assert times.min() >= gen.start_s and times.max() < gen.end_s
    months = times.astype("datetime64[s]").astype("datetime64[M]")
    # 36 whole months plus the current, partial one
    assert len(np.unique(months)) == SMALL.months + 1
    first_year = np.sum(times < gen.start_s + 365 * 86_400)
    last_year = np.sum(times >= gen.end_s - 365 * 86_400)
    assert last_year > first_year * 1.3


def test_invalid_size_names_the_field() -> None:
    with pytest.raises(ValueError, match="orders"):
        ShopSize(orders=0)


def test_seeded_database_is_consistent(shop_conn: psycopg.Connection) -> None:
    counts: dict[str, int] = dict(
        shop_conn.execute(
            "SELECT 'orders', count(*) FROM orders UNION ALL SELECT 'users', count(*) FROM users"
        ).fetchall()
    )
    assert counts == {"orders": TEST_SIZE.orders, "users": TEST_SIZE.users}
    mismatched = shop_conn.execute(
        "SELECT count(*) FROM orders o JOIN (SELECT order_id, sum(line_total) s FROM order_items"
        " GROUP BY order_id) i USING (order_id)"
        " WHERE o.subtotal <> i.s OR o.total <> o.subtotal + o.shipping_fee + o.tax"
    ).fetchone()
    assert mismatched == (0,)
    span = shop_conn.execute(
        "SELECT count(DISTINCT date_trunc('month', created_at)) FROM orders"
    ).fetchone()
    assert span == (TEST_SIZE.months + 1,)
    later = shop_conn.execute(
        "SELECT count(*) FROM orders o JOIN users u USING (user_id) WHERE u.created_at > o.created_at"
    ).fetchone()
    assert later == (0,)


def test_updated_at_is_maintained_by_trigger(shop_conn: psycopg.Connection) -> None:
    with shop_conn.transaction(force_rollback=True):
        before = shop_conn.execute(
            "SELECT updated_at FROM products WHERE product_id = 1"
        ).fetchone()
        after = shop_conn.execute(
            "UPDATE products SET price = price + 1 WHERE product_id = 1 RETURNING updated_at"
        ).fetchone()
        assert before is not None and after is not None and after[0] > before[0]


def test_reseeding_requires_replace(shop_conn: psycopg.Connection) -> None:
    with pytest.raises(RuntimeError, match="already holds"):
        seed_shop(shop_conn, TEST_SIZE)


def test_dynamodb_items_seeded(stack_info: object) -> None:
    import boto3

    table = boto3.resource("dynamodb").Table("Sessions")
    assert table.scan(Select="COUNT")["Count"] == TEST_SIZE.dynamodb_items
    preferences = boto3.resource("dynamodb").Table("UserPreferences")
    assert preferences.scan(Select="COUNT")["Count"] == TEST_SIZE.dynamodb_items

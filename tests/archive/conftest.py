"""Helpers for archive integration tests against the embedded stack.

Archive tests delete rows from their source, so they run against their own seeded copy of the
shop (database `shop_archive_tests`) and leave the session's shared `shop` database untouched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date, datetime
from typing import Any

import boto3
import dagster as dg
import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from lifecycle_pipelines.archive import manifest
from lifecycle_pipelines.archive.plan import ArchiveMonth
from lifecycle_pipelines.archive.reader import download, read_parquet, request_restore
from lifecycle_pipelines.archive.stats import ReconStats, source_stats, table_stats
from lifecycle_pipelines.assets.archive import archive_month_assets
from lifecycle_pipelines.local.stack import LocalStack, StackInfo
from lifecycle_pipelines.schedules.archive import archive_jobs_and_schedules
from tests.conftest import private_shop, resources_with_shop

ARCHIVE_SHOP_DB = "shop_archive_tests"


@pytest.fixture(scope="session")
def archive_shop(local_stack: tuple[LocalStack, StackInfo]) -> str:
    """A freshly seeded shop database of the archive tests' own."""
    return private_shop(local_stack[0], ARCHIVE_SHOP_DB)


@pytest.fixture
def shop_conn(
    local_stack: tuple[LocalStack, StackInfo], archive_shop: str
) -> Iterator[psycopg.Connection[Any]]:
    """The archive tests' own shop database (shadows the session-wide `shop_conn`)."""
    stack, _ = local_stack
    with psycopg.connect(stack.app_conninfo(archive_shop)) as conn:
        yield conn


def archive_resources() -> dict[str, Any]:
    """The local resources with `shop_db` bound to the archive tests' database."""
    return resources_with_shop(ARCHIVE_SHOP_DB)


@pytest.fixture
def control_conn(
    local_stack: tuple[LocalStack, StackInfo], archive_shop: str
) -> Iterator[psycopg.Connection[Any]]:
    stack, _ = local_stack
    with psycopg.connect(stack.app_conninfo("lifecycle"), autocommit=True) as conn:
        yield conn


def assets_of(data_type: str) -> list[dg.AssetsDefinition]:
    """The archive and purge assets of one data type."""
    return [a for a in archive_month_assets() if a.key.path[0].endswith(f"_{data_type}")]


def materialize(
    assets: list[dg.AssetsDefinition], partition_key: str, **kwargs: Any
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets,
        resources=archive_resources(),
        partition_key=partition_key,
        raise_on_error=False,
        **kwargs,
    )


def orders_stats(conn: psycopg.Connection[Any], month: date) -> tuple[ReconStats, ReconStats]:
    """(orders, order_items) figures of the rows of `month` still in the source."""
    m = ArchiveMonth("orders", month)
    where = sql.SQL("t.created_at >= {} AND t.created_at < {}").format(
        sql.Literal(m.start), sql.Literal(m.end)
    )
    orders = source_stats(
        conn,
        sql.SQL("orders AS t"),
        "order_id",
        ["subtotal", "shipping_fee", "tax", "total"],
        where,
    )
    items = source_stats(
        conn,
        sql.SQL("order_items AS i JOIN orders AS t ON i.order_id = t.order_id"),
        "order_item_id",
        ["unit_price", "line_total"],
        where,
    )
    return orders, items


def add(a: ReconStats, b: ReconStats) -> ReconStats:
    return ReconStats(
        a.rows + b.rows,
        a.pk_sum + b.pk_sum,
        a.pk_hash_sum + b.pk_hash_sum,
        {k: a.money_cents.get(k, 0) + b.money_cents.get(k, 0) for k in a.money_cents},
    )


def restored_tables(
    conn: psycopg.Connection[Any], data_type: str, month: date
) -> dict[str, pa.Table]:
    """Restore (instant on moto) and read every object of a partition, by table."""
    client = boto3.client("s3")
    tables: dict[str, list[pa.Table]] = {}
    for entry in manifest.get_objects(conn, data_type, month):
        request_restore(client, entry, days=1, tier="Bulk")
        tables.setdefault(entry.table_name, []).append(read_parquet(download(client, entry)))
    return {name: pa.concat_tables(parts) for name, parts in tables.items()}


def archived_orders_stats(
    conn: psycopg.Connection[Any], month: date
) -> tuple[ReconStats, ReconStats]:
    """(orders, order_items) figures computed from the restored archive objects."""
    tables = restored_tables(conn, "orders", month)
    return (
        table_stats(tables["orders"], "order_id", ["subtotal", "shipping_fee", "tax", "total"]),
        table_stats(tables["order_items"], "order_item_id", ["unit_price", "line_total"]),
    )


def objects_under(prefix: str) -> list[str]:
    bucket = f"{os.environ['LIFECYCLE_BUCKET_PREFIX']}-archive"
    response = boto3.client("s3").list_object_versions(Bucket=bucket, Prefix=prefix)
    return [v["Key"] for v in response.get("Versions", [])]


def insert_late_order(conn: psycopg.Connection[Any], created_at: datetime) -> int:
    """Insert (and commit) one order created at `created_at`, as an order that arrives in a
    month after its archive snapshot; returns its id."""
    row = conn.execute(
        "INSERT INTO orders (user_id, status, subtotal, shipping_fee, tax, total, created_at)"
        " SELECT user_id, 'delivered', 1, 0, 0, 1, %s FROM users LIMIT 1 RETURNING order_id",
        (created_at,),
    ).fetchone()
    conn.commit()
    assert row is not None
    return int(row[0])


def late_rows_requests() -> list[tuple[str | None, str | None]]:
    """(partition key, run key) of what the orders late-rows sensor asks for now."""
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

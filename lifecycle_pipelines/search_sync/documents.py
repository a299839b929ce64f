"""Product search documents from the shop database, and the commit-safe change window.

A document joins a product with its brand, category and inventory; its version is the latest
`updated_at` of the four rows, so a change to any of them re-syncs the product. Soft-deleted
products (`deleted_at` set) are returned with `deleted = true` and removed from the index.

Commit safety: `updated_at` is set by trigger to `now()`, the start time of the writing
transaction, so a row that commits late carries a time earlier than its commit. The high-water
mark of a run is therefore bounded by the start of the oldest transaction still open in the
database (and by a safety lag), and every run re-reads an overlap before its previous mark.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg.rows import dict_row

from lifecycle_pipelines.archive.extract import CopyStream

DOCUMENT_COLUMNS = (
    "product_id",
    "sku",
    "name",
    "description",
    "brand",
    "category",
    "price",
    "currency",
    "in_stock",
    "available_quantity",
    "is_active",
    "updated_at",
)

_SELECT = """
SELECT p.product_id, p.sku, p.name, p.description, b.name AS brand, c.name AS category,
       p.price::float8 AS price, p.currency::text AS currency,
       COALESCE(i.quantity - i.reserved, 0) > 0 AS in_stock,
       GREATEST(COALESCE(i.quantity - i.reserved, 0), 0) AS available_quantity,
       p.is_active,
       to_char(GREATEST(p.updated_at, b.updated_at, c.updated_at,
                        COALESCE(i.updated_at, p.updated_at)) AT TIME ZONE 'UTC',
               'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS updated_at,
       p.deleted_at IS NOT NULL AS deleted
FROM products p
JOIN brands b ON b.brand_id = p.brand_id
JOIN categories c ON c.category_id = p.category_id
LEFT JOIN inventory i ON i.product_id = p.product_id
"""

_CHANGED = (
    _SELECT
    + """
WHERE (p.updated_at >= %(low)s AND p.updated_at < %(high)s)
   OR (b.updated_at >= %(low)s AND b.updated_at < %(high)s)
   OR (c.updated_at >= %(low)s AND c.updated_at < %(high)s)
   OR (i.updated_at >= %(low)s AND i.updated_at < %(high)s)
ORDER BY p.product_id
"""
)


def commit_safe_high_water(conn: psycopg.Connection[Any], safety_lag: timedelta) -> datetime:
    """The latest instant every committed-or-not change before it is visible now: the earlier
    of `now() - safety_lag` and the start of the oldest other open transaction.

    Seeing other sessions' transaction starts needs the `pg_read_all_stats` role (pg_monitor)
    on RDS; without it only the safety lag protects late commits.
    """
    row = conn.execute(
        """
        SELECT LEAST(
            now() - make_interval(secs => %s),
            COALESCE((SELECT min(xact_start) FROM pg_stat_activity
                      WHERE datname = current_database() AND pid <> pg_backend_pid()
                        AND xact_start IS NOT NULL), 'infinity'))
        """,
        (safety_lag.total_seconds(),),
    ).fetchone()
    assert row is not None
    return row[0]


def changed_documents(
    conn: psycopg.Connection[Any], low: datetime, high: datetime, batch_size: int = 5_000
) -> Iterator[list[dict[str, Any]]]:
    """Batches of documents whose product, brand, category or stock changed in [low, high)."""
    with conn.transaction(), conn.cursor(name="changed_products", row_factory=dict_row) as cur:
        cur.execute(_CHANGED, {"low": low, "high": high})
        while batch := cur.fetchmany(batch_size):
            yield batch


_TYPES = {
    "product_id": pa.int64(),
    "sku": pa.string(),
    "name": pa.string(),
    "description": pa.string(),
    "brand": pa.string(),
    "category": pa.string(),
    "price": pa.float64(),
    "currency": pa.string(),
    "in_stock": pa.bool_(),
    "available_quantity": pa.int64(),
    "is_active": pa.bool_(),
    "updated_at": pa.string(),
    "deleted": pa.bool_(),
}


def all_documents(
    conn: psycopg.Connection[Any], batch_size: int = 20_000
) -> Iterator[list[dict[str, Any]]]:
    """Every product document (for a full load), in batches in product order.

    Streamed with COPY into Arrow and converted to dicts in C: several times faster than
    fetching Python rows from a cursor.
    """
    read = pacsv.ReadOptions(block_size=4 << 20)
    convert = pacsv.ConvertOptions(
        column_types=_TYPES,
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        true_values=["t"],
        false_values=["f"],
    )
    statement = f"COPY ({_SELECT} ORDER BY p.product_id) TO STDOUT (FORMAT csv, HEADER true)"
    with conn.cursor() as cur, cur.copy(statement) as copy:
        stream = io.BufferedReader(CopyStream(iter(copy)), buffer_size=1 << 20)
        pending: list[dict[str, Any]] = []
        for batch in pacsv.open_csv(stream, read_options=read, convert_options=convert):
            pending.extend(batch.to_pylist())
            while len(pending) >= batch_size:
                yield pending[:batch_size]
                pending = pending[batch_size:]
        if pending:
            yield pending


VERSIONS_SQL = (
    "SELECT p.product_id, to_char(GREATEST(p.updated_at, b.updated_at, c.updated_at,"
    " COALESCE(i.updated_at, p.updated_at)) AT TIME ZONE 'UTC',"
    ' \'YYYY-MM-DD"T"HH24:MI:SS.US"Z"\')'
    " FROM products p JOIN brands b ON b.brand_id = p.brand_id"
    " JOIN categories c ON c.category_id = p.category_id"
    " LEFT JOIN inventory i ON i.product_id = p.product_id WHERE p.deleted_at IS NULL"
)


def source_versions(conn: psycopg.Connection[Any]) -> Iterator[tuple[str, str]]:
    """(product_id, updated_at ISO) of every live product, streamed: the source side of the
    primary-key-set comparison and of the reconciliation checksum."""
    with conn.transaction(), conn.cursor(name="product_versions") as cur:
        cur.execute(VERSIONS_SQL)
        while rows := cur.fetchmany(50_000):
            for pk, version in rows:
                yield str(pk), version

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
import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv

from lifecycle_pipelines.archive.extract import CopyStream

log = logging.getLogger(__name__)

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

# The products whose product, brand, category or stock row changed in [low, high), each found
# through its own table (the updated_at indexes of products and inventory; a brand or category
# that did not change matches nothing, and then no product is scanned for it): an OR across
# the joined tables would read the whole join on every run.
_CHANGED = (
    _SELECT
    + """
WHERE p.product_id IN (
    SELECT product_id FROM products WHERE updated_at >= %(low)s AND updated_at < %(high)s
    UNION
    SELECT product_id FROM inventory WHERE updated_at >= %(low)s AND updated_at < %(high)s
    UNION
    SELECT pb.product_id FROM products pb JOIN brands cb ON cb.brand_id = pb.brand_id
    WHERE cb.updated_at >= %(low)s AND cb.updated_at < %(high)s
    UNION
    SELECT pc.product_id FROM products pc JOIN categories cc ON cc.category_id = pc.category_id
    WHERE cc.updated_at >= %(low)s AND cc.updated_at < %(high)s
)
ORDER BY p.product_id
"""
)


UNSEEN_TRANSACTIONS_LAG = timedelta(minutes=15)


def commit_safe_high_water(conn: psycopg.Connection[Any], safety_lag: timedelta) -> datetime:
    """The latest instant every committed-or-not change before it is visible now: the earlier
    of `now() - safety_lag` and the start of the oldest other open transaction.

    Seeing other roles' transaction starts needs the `pg_read_all_stats` role (pg_monitor; on
    RDS: `GRANT pg_read_all_stats TO <role>`). Without it those transactions are invisible, so
    the lag alone protects late commits: it is then at least `UNSEEN_TRANSACTIONS_LAG`, and a
    warning says why.
    """
    row = conn.execute(
        "SELECT pg_has_role(current_user, 'pg_read_all_stats', 'USAGE')"
        " OR (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)"
    ).fetchone()
    if not (row and row[0]):
        if safety_lag < UNSEEN_TRANSACTIONS_LAG:
            log.warning(
                "the database role cannot see other roles' open transactions (grant it "
                "pg_read_all_stats); changes younger than %d minutes are not taken as final",
                UNSEEN_TRANSACTIONS_LAG // timedelta(minutes=1),
            )
        safety_lag = max(safety_lag, UNSEEN_TRANSACTIONS_LAG)
    row = conn.execute(
        """
        SELECT LEAST(
            now() - make_interval(secs => %s),
            COALESCE((SELECT min(xact_start) FROM pg_stat_activity
                      WHERE datname = current_database() AND pid <> pg_backend_pid()
                        AND xact_start IS NOT NULL), 'infinity'),
            COALESCE((SELECT min(prepared) FROM pg_prepared_xacts
                      WHERE database = current_database()), 'infinity'))
        """,
        (safety_lag.total_seconds(),),
    ).fetchone()
    assert row is not None
    return row[0]


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


def _tables(
    conn: psycopg.Connection[Any], statement: str, params: dict[str, Any], batch_size: int
) -> Iterator[pa.Table]:
    """The rows of `statement` streamed with COPY into Arrow, in tables of `batch_size` rows
    (CSV parsed in C: several times faster than fetching Python rows from a cursor; one COPY
    is one snapshot)."""
    read = pacsv.ReadOptions(block_size=4 << 20)
    convert = pacsv.ConvertOptions(
        column_types=_TYPES,
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        true_values=["t"],
        false_values=["f"],
    )
    copy_sql = f"COPY ({statement}) TO STDOUT (FORMAT csv, HEADER true)"
    with conn.cursor() as cur, cur.copy(copy_sql, params or None) as copy:
        stream = io.BufferedReader(CopyStream(iter(copy)), buffer_size=1 << 20)
        pending: list[pa.RecordBatch] = []
        rows = 0
        for batch in pacsv.open_csv(stream, read_options=read, convert_options=convert):
            pending.append(batch)
            rows += batch.num_rows
            if rows >= batch_size:
                table = pa.Table.from_batches(pending)
                while table.num_rows >= batch_size:
                    yield table.slice(0, batch_size)
                    table = table.slice(batch_size)
                pending, rows = table.to_batches(), table.num_rows
        if rows:
            yield pa.Table.from_batches(pending, schema=pending[0].schema)


def all_documents(conn: psycopg.Connection[Any], batch_size: int = 20_000) -> Iterator[pa.Table]:
    """Every product document (for a full load), in Arrow tables in product order; column
    `deleted` marks the soft-deleted ones."""
    return _tables(conn, f"{_SELECT} ORDER BY p.product_id", {}, batch_size)


def changed_documents(
    conn: psycopg.Connection[Any], low: datetime, high: datetime, batch_size: int = 5_000
) -> Iterator[pa.Table]:
    """Documents whose product, brand, category or stock changed in [low, high), in Arrow
    tables in product order."""
    return _tables(conn, _CHANGED, {"low": low, "high": high}, batch_size)


def documents_by_id(
    conn: psycopg.Connection[Any], ids: list[int], batch_size: int = 5_000
) -> Iterator[pa.Table]:
    """The current documents of the products `ids` (soft-deleted ones marked `deleted`; ids
    without a product yield nothing), in Arrow tables in product order."""
    statement = _SELECT + "WHERE p.product_id = ANY(%(ids)s) ORDER BY p.product_id"
    return _tables(conn, statement, {"ids": ids}, batch_size)


def to_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The documents of a table as dicts (`updated_at` is ISO text, as in the index)."""
    return table.to_pylist()


VERSIONS_SQL = (
    "SELECT p.product_id, (EXTRACT(EPOCH FROM GREATEST(p.updated_at, b.updated_at,"
    " c.updated_at, COALESCE(i.updated_at, p.updated_at))) * 1000000)::bigint"
    " FROM products p JOIN brands b ON b.brand_id = p.brand_id"
    " JOIN categories c ON c.category_id = p.category_id"
    " LEFT JOIN inventory i ON i.product_id = p.product_id WHERE p.deleted_at IS NULL"
)


def source_versions(conn: psycopg.Connection[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(product ids, versions in microseconds since the epoch) of every live product as int64
    arrays, streamed with COPY: the source side of the primary-key-set comparison and of the
    reconciliation checksum (`VersionSet.from_arrays`)."""
    read = pacsv.ReadOptions(block_size=4 << 20, column_names=["id", "version"])
    convert = pacsv.ConvertOptions(column_types={"id": pa.int64(), "version": pa.int64()})
    ids: list[np.ndarray] = []
    versions: list[np.ndarray] = []
    with conn.cursor() as cur, cur.copy(f"COPY ({VERSIONS_SQL}) TO STDOUT (FORMAT csv)") as copy:
        stream = io.BufferedReader(CopyStream(iter(copy)), buffer_size=1 << 20)
        for batch in pacsv.open_csv(stream, read_options=read, convert_options=convert):
            ids.append(batch.column(0).to_numpy())
            versions.append(batch.column(1).to_numpy())
    if not ids:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(ids), np.concatenate(versions)

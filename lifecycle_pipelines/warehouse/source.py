"""The shop side of an hourly load: one read-only snapshot, the rows changed in an hour streamed
as Arrow batches, and the figures the source computes of them.

Every read of a load happens in one REPEATABLE READ, READ ONLY transaction, so the rows and the
source's reconciliation figures describe the same state. The rows stream out of PostgreSQL as
CSV COPY parsed into Arrow batches: by a `psql` child that imports the exported snapshot when one
is found (no Python work per row, and the snapshot's own connection stays free for the figures),
else by psycopg on the snapshot's connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pyarrow as pa
from psycopg import sql

from lifecycle_pipelines.archive.columns import TableShape
from lifecycle_pipelines.archive.extract import (
    PSQL_ENV,
    find_psql,
    psql_batches,
    select_month,
    stream_batches,
)
from lifecycle_pipelines.archive.stats import ReconStats, figures_sql, source_stats, stats_of_row
from lifecycle_pipelines.warehouse.model import WarehouseTable
from lifecycle_pipelines.warehouse.transform import UserKeys, is_user_dimension, user_key_figures

USERS_TABLE = "users"  # the source table whose `deleted_at` marks soft-deleted users
_PSQL_KEYWORDS = (  # libpq settings a psql child takes from the source connection
    "host", "hostaddr", "port", "dbname", "user", "sslmode", "sslrootcert", "sslcert", "sslkey",
    "sslcrl", "connect_timeout", "options", "application_name",
)  # fmt: skip


def psql_connect_kwargs(conn: Any) -> dict[str, Any]:
    """How a psql child reaches the database of `conn` (the password travels in its
    environment, never on its command line)."""
    parameters = conn.info.get_parameters()
    kwargs: dict[str, Any] = {k: parameters[k] for k in _PSQL_KEYWORDS if parameters.get(k)}
    if conn.info.password:
        kwargs["password"] = conn.info.password
    return kwargs


def hour_filter(hour: datetime, end: datetime) -> sql.Composable:
    """The rows of `relation` (alias `t`) changed in [hour, end)."""
    return sql.SQL("t.updated_at >= {} AND t.updated_at < {}").format(
        sql.Literal(hour), sql.Literal(end)
    )


def relation(table: WarehouseTable) -> sql.Composable:
    """The source table of a warehouse table, aliased `t`."""
    return sql.SQL("{} AS t").format(sql.Identifier("public", table.source_table))


class HourSource:
    """Reads the hours of a shop database. `shop` is a psycopg connection in autocommit mode;
    `use_psql`: None streams through psql when one is found, True requires it, False never."""

    def __init__(self, shop: Any, use_psql: bool | None = None) -> None:
        self.shop = shop
        self.use_psql = use_psql
        self._psql: str | None = None  # the psql client of the current snapshot
        self._psql_setup: list[str] = []

    @property
    def psql_streams(self) -> bool:
        """Whether, in the current snapshot, rows stream through psql (the snapshot's own
        connection is then free while they do)."""
        return self._psql is not None

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        """One REPEATABLE READ, READ ONLY transaction for every read of the hour; with psql,
        exported so that each psql session reads in the same snapshot."""
        client = find_psql() if self.use_psql is not False else None
        if self.use_psql and client is None:
            raise FileNotFoundError(f"use_psql: no psql client found (set ${PSQL_ENV})")
        with self.shop.transaction():
            self.shop.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            self._psql = client
            if client is not None:
                row = self.shop.execute("SELECT pg_export_snapshot()").fetchone()
                self._psql_setup = [
                    "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                    sql.SQL("SET TRANSACTION SNAPSHOT {}")
                    .format(sql.Literal(row[0]))
                    .as_string(self.shop),
                ]
            try:
                yield
            finally:
                self._psql = None

    def rows(
        self, shape: TableShape, table: WarehouseTable, hour: datetime, end: datetime
    ) -> Iterator[pa.RecordBatch]:
        """The table's rows changed in the hour, `shape`'s columns, in scan order (no sort
        before the first row), as Arrow batches."""
        query = select_month(shape, relation(table), hour_filter(hour, end), ordered=False)
        # parsed on this thread: the load keeps both cores busy without the parser's threads
        if self._psql is None:
            return stream_batches(self.shop, shape, query, parse_threads=False)
        statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER true)").format(query)
        return psql_batches(
            self._psql,
            psql_connect_kwargs(self.shop),
            self._psql_setup,
            statement.as_string(self.shop),
            shape,
            parse_threads=False,
        )

    def has_rows(self, table: WarehouseTable, hour: datetime, end: datetime) -> bool:
        """Whether the table has rows changed in the hour (one probe of its `updated_at`
        index): an hour without any is not extracted, and no psql child is started for it."""
        query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE {})").format(
            relation(table), hour_filter(hour, end)
        )
        row = self.shop.execute(query).fetchone()
        return bool(row and row[0])

    def figures(
        self, table: WarehouseTable, hour: datetime, end: datetime, user_keys: UserKeys
    ) -> ReconStats:
        """The source's reconciliation figures of the hour, computed by SQL. The user dimension
        is keyed by the HMAC of the user id, which the source cannot compute: its users of the
        hour are read as one array and their figures taken from their keys (`user_keys`, an
        instance of its own: the extraction's is used by another thread). Like with like:
        soft-deleted users are not loaded, so not counted."""
        where = hour_filter(hour, end)
        if not is_user_dimension(table):
            return source_stats(self.shop, relation(table), table.key, list(table.money), where)
        query = sql.SQL(
            "SELECT COALESCE(array_agg(t.user_id), '{{}}') FROM {rel} WHERE {w} AND t.deleted_at IS NULL"
        ).format(rel=relation(table), w=where)
        row = self.shop.execute(query, binary=True).fetchone()
        ids = pa.array(row[0] if row else [], pa.int64())
        return user_key_figures(user_keys(ids))

    def deleted_users(self, table: WarehouseTable, hour: datetime, end: datetime) -> pa.Array:
        """The soft-deleted users referenced by the table's rows of the hour, in one query."""
        query = sql.SQL(
            "SELECT DISTINCT t.user_id FROM {rel} JOIN {users} u ON u.user_id = t.user_id"
            " WHERE {hour} AND u.deleted_at IS NOT NULL"
        ).format(
            rel=relation(table),
            users=sql.Identifier("public", USERS_TABLE),
            hour=hour_filter(hour, end),
        )
        return pa.array([int(row[0]) for row in self.shop.execute(query).fetchall()], pa.int64())

    def deleted_keys(
        self, table: WarehouseTable, hour: datetime, end: datetime
    ) -> list[tuple[int, datetime]]:
        """(key, when) of the table's source rows deleted in [hour, end), the latest deletion
        of each key, from the tombstones the shop's delete triggers record
        (`lifecycle_archive.deletions`; archive purges record none)."""
        rows = self.shop.execute(
            "SELECT pk, max(deleted_at) FROM lifecycle_archive.deletions WHERE table_name = %s"
            " AND deleted_at >= %s AND deleted_at < %s GROUP BY pk",
            (table.source_table, hour, end),
        ).fetchall()
        return [(int(row[0]), row[1]) for row in rows]

    def forget_old_deletions(self, older_than: datetime) -> int:
        """Drop tombstones older than `older_than` (autocommit); returns how many. A tombstone
        matters until its hour is loaded; a later load of an older hour reads the source as it
        is now, where the deleted row no longer exists."""
        cur = self.shop.execute(
            "DELETE FROM lifecycle_archive.deletions WHERE deleted_at < %s", (older_than,)
        )
        return int(cur.rowcount)

    def figures_and_profile(
        self, table: WarehouseTable, hour: datetime, end: datetime, bound: Any
    ) -> tuple[ReconStats, int]:
        """The source's figures of the hour (as `figures`, for a table keyed by its own key) and
        how many of its rows have a key above `bound`, in one pass over the hour's rows. Only
        for a table keyed by a source column (not the user dimension, keyed by the HMAC)."""
        if table.key not in table.taken:
            raise ValueError(f"{table.name}: its key {table.key} is not a source column")
        key = sql.Identifier("t", table.key)
        money = list(table.money)
        query = sql.SQL("SELECT {}, count(*) FILTER (WHERE {} > %s) FROM {} WHERE {}").format(
            figures_sql(key, money), key, relation(table), hour_filter(hour, end)
        )
        row = self.shop.execute(query, (bound,)).fetchone()
        assert row is not None
        return stats_of_row(row, money), int(row[-1])

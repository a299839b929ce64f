"""The warehouse side of an hourly load, on one cursor of the load's transaction: tables created
under an advisory lock, the targets' greatest keys, MERGE (with the new keys INSERTed apart on
PostgreSQL), the warehouse's reconciliation figures, soft-deleted users' rows, dim_date.

The SQL text comes from `warehouse/sql.py`; which engine's statements run is decided here.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from lifecycle_pipelines.archive.stats import ReconStats, stats_of_row
from lifecycle_pipelines.warehouse import sql
from lifecycle_pipelines.warehouse.model import (
    DIM_DATE_COLUMNS,
    Engine,
    SchemaChange,
    WarehouseTable,
    catalog_type,
)

DELETIONS_CHUNK = 1_000  # recorded deletions per INSERT (Redshift runs executemany row by row)
DDL_LOCK_NAMESPACE = "lifecycle_pipelines.warehouse.ddl"


def advisory_key(*names: str) -> int:
    """A stable signed 64-bit key for `pg_advisory_xact_lock` from names (not Python's hash)."""
    digest = hashlib.sha256("\x1f".join(names).encode()).digest()
    return int(struct.unpack(">q", digest[:8])[0])


@dataclass(frozen=True)
class Bound:
    """A target's greatest key before the load's rows went in (read under the table lock);
    None when the target was empty."""

    key: Any

    @property
    def target_was_empty(self) -> bool:
        return self.key is None


class WarehouseTarget:
    """The star schema `schema` of a warehouse reached by `conn` (psycopg for PostgreSQL,
    redshift_connector for Redshift)."""

    def __init__(self, conn: Any, engine: Engine, schema: str) -> None:
        self.conn = conn
        self.engine = engine
        self.schema = schema

    def stage_for(self, table: str) -> sql.Relation:
        """The name of a table's stage (`sql.create_stage`). PostgreSQL: in the warehouse schema,
        named after the session's server process, which no other live session shares (two
        loads creating one name would wait on each other until the first commits); Redshift:
        a temporary table of the session."""
        if self.engine != "postgres":
            return (f"stage_{table}",)
        session = getattr(getattr(self.conn, "info", None), "backend_pid", None)
        token = str(session) if session else secrets.token_hex(4)
        return (self.schema, f"stage_{table}_{token}")

    def create_tables(
        self, tables: list[tuple[WarehouseTable, list[tuple[str, str]]]]
    ) -> list[str]:
        """CREATE SCHEMA / TABLE IF NOT EXISTS (each table with its columns, and dim_date),
        then compare every existing table with the columns the source now needs, committed.
        On PostgreSQL under an advisory lock per schema: two loads creating the same table at
        once would otherwise collide.

        A column the model takes but the table lacks is added (returned as `table.column`);
        a column whose warehouse type no longer matches the source's raises `SchemaChange`
        naming it, and nothing is changed (a narrower type would round or cut values)."""
        conn = self.conn
        wanted = [(table.name, columns, table.key) for table, columns in tables]
        wanted.append(("dim_date", list(DIM_DATE_COLUMNS), "date_key"))
        added: list[str] = []
        try:
            with conn.cursor() as cur:
                if self.engine == "postgres":
                    cur.execute(
                        "SELECT pg_advisory_xact_lock(%s)",
                        (advisory_key(DDL_LOCK_NAMESPACE, self.schema),),
                    )
                cur.execute(sql.create_schema(self.schema))
                for name, columns, key in wanted:
                    cur.execute(sql.create_table(self.schema, name, columns, key))
                    added += self._align_columns(cur, name, columns)
                cur.execute(sql.create_deletions(self.schema))
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return added

    def _align_columns(self, cur: Any, table: str, columns: list[tuple[str, str]]) -> list[str]:
        cur.execute(sql.column_types(), (self.schema, table))
        existing = {name: type_ for name, type_ in cur.fetchall()}
        changed = [
            f"{name} is {existing[name]}, the source now needs {catalog_type(type_)}"
            for name, type_ in columns
            if name in existing and existing[name] != catalog_type(type_)
        ]
        if changed:
            raise SchemaChange(
                f"{self.schema}.{table}: column type(s) no longer match the source: "
                f"{'; '.join(changed)}. Migrate the warehouse column(s) (ALTER TABLE ... ALTER "
                "COLUMN ... TYPE) or restore the source type; nothing was loaded"
            )
        added = []
        for name, type_ in columns:
            if name not in existing:
                cur.execute(sql.add_column(self.schema, table, name, type_))
                added.append(f"{table}.{name}")
        return added

    def lock(self, cur: Any, tables: list[str]) -> None:
        """Lock the targets for the rest of the transaction: one statement, in the given order
        (every load uses the same order, so loads cannot deadlock)."""
        cur.execute(sql.lock_tables(self.schema, tables, self.engine))

    def greatest_key(self, cur: Any, table: WarehouseTable) -> Bound:
        cur.execute(sql.greatest_key(self.schema, table.name, table.key))
        row = cur.fetchone()
        return Bound(row[0] if row else None)

    def insert_new_and_merge(
        self, cur: Any, table: WarehouseTable, stage: sql.Relation, names: list[str]
    ) -> Bound:
        """PostgreSQL: read the target's greatest key (under the lock), MERGE the staged rows at
        or below it, then INSERT those above it (they cannot be in the target; after the MERGE,
        whose join then sees only the rows that were there). Returns the bound."""
        bound = self.greatest_key(cur, table)
        if bound.target_was_empty:
            cur.execute(
                sql.insert_new(self.schema, table.name, stage, table.key, names, above=False)
            )
            return bound
        merge = sql.merge_changed(
            self.schema, table.name, stage, table.key, names, table.version, up_to_key=True
        )
        cur.execute(merge, (bound.key, bound.key))
        insert = sql.insert_new(self.schema, table.name, stage, table.key, names, above=True)
        cur.execute(insert, (bound.key,))
        return bound

    def merge_staged(
        self,
        cur: Any,
        table: WarehouseTable,
        stage: sql.Relation,
        names: list[str],
        bound: Bound,
    ) -> None:
        """PostgreSQL: MERGE the staged rows of a split load (every one at or below `bound`;
        those above it went straight into the target)."""
        merge = sql.merge_changed(
            self.schema, table.name, stage, table.key, names, table.version, up_to_key=True
        )
        cur.execute(merge, (bound.key, bound.key))

    def merge_redshift(
        self, cur: Any, table: WarehouseTable, stage: sql.Relation, names: list[str]
    ) -> None:
        """Redshift: drop staged rows older than the warehouse's, then MERGE."""
        if table.version:
            cur.execute(sql.drop_older(self.schema, table.name, stage, table.key, table.version))
        cur.execute(sql.merge(self.schema, table.name, stage, table.key, names))

    def figures(
        self, cur: Any, table: WarehouseTable, stage: sql.Relation | None, bound: Bound | None
    ) -> ReconStats:
        """The reconciliation figures of the hour's rows as the warehouse now holds them,
        computed by the warehouse in one row: `sql.figures` over the staged keys when there is
        no bound (Redshift); with the bound of `insert_new_and_merge` or of a direct or split
        COPY, `sql.figures_split` (`stage` None: nothing was staged)."""
        if bound is None:
            if stage is None:
                raise ValueError(f"{table.name}: figures without a bound need the stage")
            cur.execute(sql.figures(self.schema, table, stage, self.engine))
        elif bound.target_was_empty:
            cur.execute(
                sql.figures_split(
                    self.schema, table, stage, target_was_empty=True, engine=self.engine
                )
            )
        else:
            statement = sql.figures_split(
                self.schema, table, stage, target_was_empty=False, engine=self.engine
            )
            cur.execute(statement, (bound.key,) if stage is None else (bound.key, bound.key))
        return stats_of_row(cur.fetchone(), list(table.money))

    def superseded(self, cur: Any, table: WarehouseTable, stage: sql.Relation) -> ReconStats | None:
        """The figures of the staged rows the warehouse holds in a newer version
        (`sql.superseded_figures`), or None for a table without a version column."""
        if not table.version:
            return None
        cur.execute(sql.superseded_figures(self.schema, table, stage, self.engine))
        return stats_of_row(cur.fetchone(), list(table.money))

    def apply_deletions(
        self,
        cur: Any,
        table: WarehouseTable,
        key_type: str,
        hour: tuple[datetime, datetime],
        deletions: Sequence[tuple[Any, datetime]],
    ) -> None:
        """Record the hour's deletions of `table` (key, deleted_at) in the warehouse (replacing
        what an earlier run of the hour recorded), then delete every row of `table` older than
        a deletion recorded since the hour's start: this hour's, and those of later hours
        loaded before this one committed."""
        start, end = hour
        cur.execute(sql.forget_deletions(self.schema), (table.name, start, end))
        rows = sorted({(table.name, str(key), at) for key, at in deletions})
        for first in range(0, len(rows), DELETIONS_CHUNK):
            chunk = rows[first : first + DELETIONS_CHUNK]
            flat = tuple(value for row in chunk for value in row)
            cur.execute(sql.record_deletions(self.schema, len(chunk)), flat)
        cur.execute(sql.delete_deleted_rows(self.schema, table, key_type), (table.name, start))

    def forget_old_deletions(self, cur: Any, older_than: datetime) -> None:
        """Drop recorded deletions older than `older_than`."""
        cur.execute(sql.forget_old_deletions(self.schema), (older_than,))

    def merge_dates(self, cur: Any, keys: list[int]) -> None:
        """Add the dim_date rows of the given YYYYMMDD keys (existing ones are rewritten the
        same)."""
        if not keys:
            return
        cur.execute(f"CREATE TEMP TABLE stage_dim_date (LIKE {sql.ident(self.schema, 'dim_date')})")
        rows = []
        for key in keys:
            day = datetime.strptime(str(key), "%Y%m%d").date()
            rows.append(
                (key, day, day.year, (day.month - 1) // 3 + 1, day.month, day.day, day.isoweekday())
            )
        cur.executemany("INSERT INTO stage_dim_date VALUES (%s, %s, %s, %s, %s, %s, %s)", rows)
        columns = [c for c, _ in DIM_DATE_COLUMNS]
        cur.execute(sql.merge(self.schema, "dim_date", ("stage_dim_date",), "date_key", columns))
        cur.execute("DROP TABLE stage_dim_date")

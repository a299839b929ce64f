"""Load one hour of changes into the warehouse: extract, pseudonymise, stage, COPY, MERGE.

1. The hour must be closed: the commit-safe high-water mark of the source (oldest open
   transaction, safety lag) has passed its end, so no row of the hour can still commit.
2. Every table is checked against the model (new, changed or vanished source columns are
   reported, naming the column) before anything is written.
3. Rows whose `updated_at` falls in the hour are extracted (COPY, Arrow); user ids become
   HMAC-SHA256 keys and personal columns are never selected; each table is written as Parquet
   to the staging bucket under a deterministic key.
4. One warehouse transaction loads every table: a temporary stage shaped like the target,
   COPY (Redshift: FROM S3 with the IAM role; PostgreSQL: FROM STDIN), stale rows dropped, MERGE.
   Re-running an hour changes nothing; a late change lands on its existing row.

Soft-deleted users (the shop's `users.deleted_at` is set by an erasure request or an account
closure) are excluded from the moment of the soft delete: their rows of the hour are not loaded
into dim_users and their existing dim_users row is deleted in the load's transaction; fact_orders
rows of the hour whose user is soft-deleted are loaded with `user_key` NULL. The hard delete
(`warehouse/eraser.py`) later nulls their older fact rows too.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import sql as psql

from lifecycle_pipelines.archive.columns import TableShape, read_columns
from lifecycle_pipelines.archive.extract import select_month, stream_batches
from lifecycle_pipelines.archive.stats import ReconStats, source_stats
from lifecycle_pipelines.resources.s3 import S3Resource
from lifecycle_pipelines.search_sync.documents import commit_safe_high_water
from lifecycle_pipelines.warehouse import sql
from lifecycle_pipelines.warehouse.model import (
    DIM_DATE_COLUMNS,
    TABLES,
    USER_KEY,
    Engine,
    WarehouseTable,
    check_source,
    columns_of,
)

log = logging.getLogger(__name__)
STAGING_BUCKET_SUFFIX = "staging"


class HourNotClosed(RuntimeError):
    """A transaction that may still write rows of this hour is open; nothing was loaded."""


@dataclass
class TableLoad:
    """What one table received."""

    table: WarehouseTable
    rows: int
    uri: str
    source: ReconStats
    new_columns: list[str] = field(default_factory=list)
    excluded: int = 0  # rows of soft-deleted users: not loaded (dim_users) or without user key


@dataclass
class HourLoad:
    """What one hourly run did."""

    hour: datetime
    tables: list[TableLoad] = field(default_factory=list)
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    seconds: float = 0.0


def user_keys(user_ids: pa.ChunkedArray | pa.Array, key: bytes) -> pa.Array:
    """HMAC-SHA256 (hex) of each user id; NULL stays NULL."""
    return pa.array(
        [
            None if uid is None else hmac.new(key, str(uid).encode(), hashlib.sha256).hexdigest()
            for uid in user_ids.to_pylist()
        ],
        pa.string(),
    )


def without_users(user_ids: pa.ChunkedArray | pa.Array, excluded: list[int]) -> pa.Array:
    """`user_ids` with every id in `excluded` replaced by NULL (vectorised)."""
    ids = user_ids.combine_chunks() if isinstance(user_ids, pa.ChunkedArray) else user_ids
    if not excluded:
        return ids
    mask = pc.is_in(ids, value_set=pa.array(excluded, ids.type))
    return pc.if_else(mask, pa.scalar(None, ids.type), ids)


def date_keys(times: pa.ChunkedArray | pa.Array) -> pa.Array:
    return pc.cast(pc.strftime(times, format="%Y%m%d"), pa.int32())


DELETED_USERS = "SELECT user_id FROM users WHERE deleted_at IS NOT NULL AND user_id = ANY(%s)"
PURGE_CHUNK = 1_000  # bound values per DELETE ... IN (...)


def is_user_dimension(table: WarehouseTable) -> bool:
    """Whether the table's rows are users (keyed by the user key): soft-deleted users are left
    out of it; other tables with a user key keep their rows with the key NULL."""
    return table.key == USER_KEY.name


@dataclass
class Staged:
    """One table's batch, staged and ready to load."""

    table: WarehouseTable
    columns: list[tuple[str, str]]
    arrow: pa.Table
    uri: str
    purge: list[str] = field(default_factory=list)  # keys to delete (soft-deleted users)


class HourLoader:
    """Loads hours of changes from the shop into the warehouse (see the module docstring)."""

    def __init__(
        self,
        *,
        shop: Any,
        warehouse: Any,
        engine: Engine,
        schema: str,
        s3: S3Resource,
        pseudonym_key: bytes,
        copy_iam_role_arn: str | None = None,
        on_new_column: str = "fail",
        safety_lag: timedelta = timedelta(seconds=30),
        logger: logging.Logger | Any = log,
    ) -> None:
        self.shop = shop
        self.warehouse = warehouse
        self.engine = engine
        self.schema = schema
        self.s3 = s3
        self.key = pseudonym_key
        self.role = copy_iam_role_arn
        self.on_new_column = on_new_column
        self.safety_lag = safety_lag
        self.log = logger
        self.bucket = s3.bucket(STAGING_BUCKET_SUFFIX)

    def run(self, hour: datetime) -> HourLoad:
        started = time.perf_counter()
        end = hour + timedelta(hours=1)
        mark = commit_safe_high_water(self.shop, self.safety_lag)
        if mark < end:
            raise HourNotClosed(
                f"partition_key: hour {hour:%Y-%m-%d %H}:00 is not closed yet (changes up to "
                f"{mark:%Y-%m-%d %H:%M:%S} UTC are final); nothing was loaded"
            )
        plans = []
        for table in TABLES:
            source = read_columns(self.shop, "public", table.source_table)
            new = check_source(
                table, source, "ignore" if self.on_new_column == "ignore" else "fail"
            )
            plans.append((table, source, columns_of(table, source, self.engine), new))
        result = HourLoad(hour)
        staged = []
        for table, source, columns, new in plans:
            arrow, stats = self._extract(table, source, hour, end)
            arrow, purge, excluded = self._transform(table, arrow, [c for c, _ in columns])
            uri = self._stage(table, arrow, hour)
            staged.append(Staged(table, columns, arrow, uri, purge))
            result.tables.append(TableLoad(table, arrow.num_rows, uri, stats, new, excluded))
            if new:
                self.log.warning(f"{table.source_table}: new column(s) {new} not loaded (policy)")
            if excluded:
                self.log.info(f"{table.name}: {excluded} row(s) of soft-deleted users excluded")
        self._load(staged, result)
        result.seconds = time.perf_counter() - started
        return result

    # -- steps -----------------------------------------------------------------------------
    def _extract(
        self, table: WarehouseTable, source: list[Any], hour: datetime, end: datetime
    ) -> tuple[pa.Table, ReconStats]:
        wanted = list(table.taken)
        if USER_KEY in table.derived:
            wanted.append("user_id")
        by_name = {c.name: c for c in source}
        selected = tuple(by_name[n] for n in wanted)
        key = table.key if table.key in wanted else "user_id"
        shape = TableShape(
            schema="public", table=table.source_table, columns=selected, primary_key=key,
            time_column=None, version_column=None, subject_column=None, personal_columns=(),
            money_columns=table.money,
        )  # fmt: skip
        rel = psql.SQL("{} AS t").format(psql.Identifier("public", table.source_table))
        where = psql.SQL("t.updated_at >= {} AND t.updated_at < {}").format(
            psql.Literal(hour), psql.Literal(end)
        )
        batches = list(stream_batches(self.shop, shape, select_month(shape, rel, where)))
        arrow = pa.Table.from_batches(batches) if batches else shape.arrow_schema().empty_table()
        if is_user_dimension(table):  # reconcile like with like: soft-deleted users are not loaded
            where = psql.SQL("{} AND t.deleted_at IS NULL").format(where)
        stats = source_stats(self.shop, rel, key, list(table.money), where)
        return arrow, stats

    def _transform(
        self, table: WarehouseTable, arrow: pa.Table, columns: list[str]
    ) -> tuple[pa.Table, list[str], int]:
        """The batch as the warehouse takes it, the user keys to delete from the table, and the
        number of rows excluded (soft-deleted users)."""
        purge: list[str] = []
        excluded = 0
        if is_user_dimension(table):
            deleted = pc.is_valid(arrow.column("deleted_at"))
            excluded = pc.sum(deleted).as_py() or 0
            if excluded:
                gone = arrow.filter(deleted).column("user_id")
                purge = [k for k in user_keys(gone, self.key).to_pylist() if k is not None]
                arrow = arrow.filter(pc.invert(deleted))
        if USER_KEY in table.derived:
            ids = arrow.column("user_id")
            if not is_user_dimension(table):
                masked = without_users(ids, self._deleted_users(ids))
                excluded = masked.null_count - ids.null_count
                ids = masked
            arrow = arrow.append_column("user_key", user_keys(ids, self.key))
        if "date_key" in columns:
            arrow = arrow.append_column("date_key", date_keys(arrow.column("created_at")))
        return arrow.select(columns), purge, excluded

    def _deleted_users(self, user_ids: pa.ChunkedArray | pa.Array) -> list[int]:
        """The soft-deleted users among `user_ids`, in one query."""
        distinct = pc.drop_null(pc.unique(user_ids)).to_pylist()
        if not distinct:
            return []
        with self.shop.cursor() as cur:
            cur.execute(DELETED_USERS, (distinct,))
            return [int(row[0]) for row in cur.fetchall()]

    def _stage(self, table: WarehouseTable, arrow: pa.Table, hour: datetime) -> str:
        key = f"warehouse/{table.name}/hour={hour:%Y-%m-%dT%H}/part-00000.parquet"
        buffer = io.BytesIO()
        pq.write_table(arrow, buffer, compression="zstd")
        self.s3.put_bytes(
            self.bucket, key, buffer.getvalue(), content_type="application/vnd.apache.parquet"
        )
        return self.s3.uri(self.bucket, key)

    def _copy_into_stage(self, cur: Any, stage: str, arrow: pa.Table, uri: str) -> None:
        if self.engine == "redshift":
            if not self.role:
                raise ValueError("copy_iam_role_arn: Redshift COPY needs the IAM role")
            cur.execute(sql.redshift_copy(stage, uri, self.role))
            return
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        data = self.s3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
        staged = pq.read_table(io.BytesIO(data))
        csv = io.BytesIO()
        pacsv.write_csv(staged, csv, pacsv.WriteOptions(include_header=False))
        columns = ", ".join(sql.ident(c) for c in staged.column_names)
        with cur.copy(f"COPY {sql.ident(stage)} ({columns}) FROM STDIN (FORMAT csv)") as copy:
            copy.write(csv.getvalue())

    def _load(self, staged: list[Staged], result: HourLoad) -> None:
        conn = self.warehouse
        with conn.cursor() as cur:
            cur.execute(sql.create_schema(self.schema))
            for item in staged:
                cur.execute(
                    sql.create_table(self.schema, item.table.name, item.columns, item.table.key)
                )
            cur.execute(
                sql.create_table(self.schema, "dim_date", list(DIM_DATE_COLUMNS), "date_key")
            )
        conn.commit()
        with conn.cursor() as cur:
            dates: set[int] = set()
            for item in staged:
                table, columns, arrow, uri = item.table, item.columns, item.arrow, item.uri
                stage = f"stage_{table.name}"
                cur.execute(sql.create_stage(self.schema, table.name, stage))
                self._copy_into_stage(cur, stage, arrow, uri)
                if table.version:
                    cur.execute(
                        sql.drop_older(self.schema, table.name, stage, table.key, table.version)
                    )
                cur.execute(
                    sql.merge(self.schema, table.name, stage, table.key, [c for c, _ in columns])
                )
                if "date_key" in arrow.column_names:
                    dates.update(k for k in arrow.column("date_key").to_pylist() if k is not None)
                result.frames[table.name] = self._warehouse_frame(cur, table, stage)
                cur.execute(f"DROP TABLE {sql.ident(stage)}")
                self._purge(cur, table, item.purge)
            self._merge_dates(cur, sorted(dates))
        conn.commit()

    def _purge(self, cur: Any, table: WarehouseTable, keys: list[str]) -> None:
        """Delete the rows of soft-deleted users (bound keys, in chunks)."""
        for start in range(0, len(keys), PURGE_CHUNK):
            chunk = tuple(keys[start : start + PURGE_CHUNK])
            cur.execute(sql.delete_keys(self.schema, table.name, table.key, len(chunk)), chunk)

    def _warehouse_frame(self, cur: Any, table: WarehouseTable, stage: str) -> pd.DataFrame:
        """The merged rows of the staged keys, as the warehouse now holds them."""
        money = "".join(f", (t.{sql.ident(m)} * 100)::bigint" for m in table.money)
        query = (
            f"SELECT t.{sql.ident(table.key)}{money} FROM {sql.ident(self.schema, table.name)} t "
            f"JOIN {sql.ident(stage)} s ON s.{sql.ident(table.key)} = t.{sql.ident(table.key)}"
        )
        names = [table.key, *(f"_cents_{m}" for m in table.money)]
        if self.engine == "postgres":  # stream as CSV into Arrow instead of Python tuples
            buffer = io.BytesIO()
            with cur.copy(f"COPY ({query}) TO STDOUT (FORMAT csv)") as copy:
                for chunk in copy:
                    buffer.write(chunk)
            if not buffer.getbuffer().nbytes:
                return pd.DataFrame({n: pd.Series(dtype="int64") for n in names})
            buffer.seek(0)
            read = pacsv.ReadOptions(column_names=names)
            convert = pacsv.ConvertOptions(
                column_types={
                    n: pa.string() if n == table.key and table.key == "user_key" else pa.int64()
                    for n in names
                }
            )
            return pacsv.read_csv(buffer, read_options=read, convert_options=convert).to_pandas()
        cur.execute(query)
        return pd.DataFrame([tuple(r) for r in cur.fetchall()], columns=names)

    def _merge_dates(self, cur: Any, keys: list[int]) -> None:
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
        cur.execute(
            sql.merge(
                self.schema,
                "dim_date",
                "stage_dim_date",
                "date_key",
                [c for c, _ in DIM_DATE_COLUMNS],
            )
        )
        cur.execute("DROP TABLE stage_dim_date")

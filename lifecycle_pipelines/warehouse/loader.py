"""Load one hour of changes into the warehouse: extract, pseudonymise, stage, COPY, MERGE.

1. The hour must be closed: the commit-safe high-water mark of the source (oldest open
   transaction, safety lag) has passed its end, so no row of the hour can still commit.
2. Every table is checked against the model (new, changed or vanished source columns are
   reported, naming the column) before anything is written.
3. The source is read in one REPEATABLE READ, READ ONLY snapshot, so the rows extracted and the
   source's reconciliation figures describe the same state. Rows whose `updated_at` falls in the
   hour stream out of PostgreSQL as CSV COPY parsed into Arrow batches (by a `psql` child that
   imports the snapshot when one is found, no Python work per row; else by psycopg); memory is
   bounded by the batch, not by the hour. User ids become HMAC-SHA256 keys (computed once per
   distinct id) and personal columns are never selected; each table is written as Parquet (by a
   background thread) to the staging bucket under a deterministic key.
4. One warehouse transaction loads every table, then MERGEs under the tables' locks (taken in
   one statement, one fixed order):
   - PostgreSQL: the batches already in memory are sent as they stream through
     `COPY FROM STDIN (FORMAT binary)` (the staged Parquet is not read back), into:
     - the target itself when every key of the hour is above the target's greatest key (a first
       load, a backfill into an empty range): nothing of them can be there, so no stage and no
       MERGE. The locks are then taken before the stream and the bound is read under them;
     - otherwise a temporary stage shaped like the target. Under the locks, the staged rows at
       or below the target's greatest key are MERGEd (a row is updated only when the staged
       version is not older and something changed, so re-running an hour writes nothing) and
       those above it (an hour's new orders) INSERTed without a join;
   - Redshift: `COPY ... FROM 's3://...' IAM_ROLE ... FORMAT AS PARQUET` into a stage, staged
     rows older than the warehouse's dropped, then MERGE.
   The warehouse then computes its reconciliation figures of the hour's keys in the same
   transaction. Re-running an hour changes nothing; a late change lands on its existing row.
   Hours may load in parallel (a backfill): each load has its own session and stages, the tables
   are created under an advisory lock, and the locks (SHARE ROW EXCLUSIVE on PostgreSQL: readers
   go on) are held until commit, so concurrent loads of the same keys run one after the other
   and the later one sees the earlier one's rows.

Soft-deleted users (the shop's `users.deleted_at` is set by an erasure request or an account
closure) are excluded from the moment of the soft delete: their rows of the hour are not loaded
into dim_users and their existing dim_users row is deleted in the load's transaction; fact_orders
rows of the hour whose user is soft-deleted are loaded with `user_key` NULL. The hard delete
(`warehouse/eraser.py`) later nulls their older fact rows too.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import struct
import tempfile
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from psycopg import sql as psql
from psycopg.copy import QueuedLibpqWriter

from lifecycle_pipelines.archive.columns import SourceColumn, TableShape, read_columns
from lifecycle_pipelines.archive.extract import (
    PSQL_ENV,
    find_psql,
    psql_batches,
    select_month,
    stream_batches,
)
from lifecycle_pipelines.archive.stats import ReconStats, source_stats
from lifecycle_pipelines.resources.s3 import S3Resource
from lifecycle_pipelines.search_sync.documents import commit_safe_high_water
from lifecycle_pipelines.warehouse import sql
from lifecycle_pipelines.warehouse.binary_copy import HEADER, TRAILER, BinaryCopyEncoder
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
USERS_TABLE = "users"  # the source table whose `deleted_at` marks soft-deleted users
PARQUET_ROW_GROUP_ROWS = 128_000
PURGE_CHUNK = 1_000  # bound values per DELETE ... IN (...)
PARQUET_QUEUE_BATCHES = 4  # batches waiting for the background Parquet writer
DDL_LOCK_NAMESPACE = "lifecycle_pipelines.warehouse.ddl"


T = TypeVar("T")


@contextmanager
def _closing(iterator: Iterator[T]) -> Iterator[Iterator[T]]:
    """Close a generator when the block ends, also early (its COPY or transaction ends too)."""
    try:
        yield iterator
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


_PSQL_KEYWORDS = (  # libpq settings a psql child takes from the source connection
    "host", "hostaddr", "port", "dbname", "user", "sslmode", "sslrootcert", "sslcert", "sslkey",
    "sslcrl", "connect_timeout", "options", "application_name",
)  # fmt: skip


def _psql_connect_kwargs(conn: Any) -> dict[str, Any]:
    """How a psql child reaches the database of `conn` (the password travels in its
    environment, never on its command line)."""
    parameters = conn.info.get_parameters()
    kwargs: dict[str, Any] = {k: parameters[k] for k in _PSQL_KEYWORDS if parameters.get(k)}
    if conn.info.password:
        kwargs["password"] = conn.info.password
    return kwargs


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
    path: str = "staged"  # "direct": COPYed into the target (every key new); "staged": MERGEd


@dataclass
class HourLoad:
    """What one hourly run did."""

    hour: datetime
    tables: list[TableLoad] = field(default_factory=list)
    figures: dict[str, ReconStats] = field(default_factory=dict)  # the warehouse's, per table
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step, for profiling


class UserKeys:
    """HMAC-SHA256 (hex) of user ids under one key, computed once per distinct id.

    The keyed state is prepared once and copied for each new id; the ids seen so far and their
    keys are kept as aligned Arrow arrays, so a batch is mapped with `index_in` and `take` and
    only ids never seen before reach Python. NULL stays NULL.
    """

    def __init__(self, key: bytes) -> None:
        self._base = hmac.new(key, digestmod=hashlib.sha256)
        self._ids: pa.Array = pa.array([], pa.int64())
        self._keys: pa.Array = pa.array([], pa.string())

    def _new_keys(self, ids: list[int]) -> pa.Array:
        keys = []
        for user_id in ids:
            mac = self._base.copy()
            mac.update(str(user_id).encode())
            keys.append(mac.hexdigest())
        return pa.array(keys, pa.string())

    def __call__(self, user_ids: pa.ChunkedArray | pa.Array) -> pa.Array:
        ids = user_ids.combine_chunks() if isinstance(user_ids, pa.ChunkedArray) else user_ids
        ids = pc.cast(ids, pa.int64())
        distinct = pc.drop_null(pc.unique(ids))
        new = pc.filter(distinct, pc.invert(pc.is_in(distinct, value_set=self._ids)))
        if len(new):
            self._ids = pa.concat_arrays([self._ids, new])
            self._keys = pa.concat_arrays([self._keys, self._new_keys(new.to_pylist())])
        return pc.take(self._keys, pc.index_in(ids, value_set=self._ids))


def user_keys(user_ids: pa.ChunkedArray | pa.Array, key: bytes) -> pa.Array:
    """HMAC-SHA256 (hex) of each user id; NULL stays NULL."""
    return UserKeys(key)(user_ids)


def without_users(user_ids: pa.ChunkedArray | pa.Array, excluded: list[int] | pa.Array) -> pa.Array:
    """`user_ids` with every id in `excluded` replaced by NULL (vectorised)."""
    ids = user_ids.combine_chunks() if isinstance(user_ids, pa.ChunkedArray) else user_ids
    if not len(excluded):
        return ids
    mask = pc.is_in(ids, value_set=pa.array(excluded, ids.type))
    return pc.if_else(mask, pa.scalar(None, ids.type), ids)


def date_keys(times: pa.ChunkedArray | pa.Array) -> pa.Array:
    """YYYYMMDD of each timestamp (in its own time zone, UTC here) as int32."""
    ymd = pc.add(
        pc.add(pc.multiply(pc.year(times), 10_000), pc.multiply(pc.month(times), 100)),
        pc.day(times),
    )
    return pc.cast(ymd, pa.int32())


def is_user_dimension(table: WarehouseTable) -> bool:
    """Whether the table's rows are users (keyed by the user key): soft-deleted users are left
    out of it; other tables with a user key keep their rows with the key NULL."""
    return table.key == USER_KEY.name


def advisory_key(*names: str) -> int:
    """A stable signed 64-bit key for `pg_advisory_xact_lock` from names (not Python's hash)."""
    digest = hashlib.sha256("\x1f".join(names).encode()).digest()
    return int(struct.unpack(">q", digest[:8])[0])


class _Clock:
    """Adds the seconds since the last lap to `phases[name]` (phases sum over tables)."""

    def __init__(self, phases: dict[str, float]) -> None:
        self.phases = phases
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = self.phases.get(name, 0.0) + now - self.last
        self.last = now


@dataclass
class _Plan:
    """One table to load: its model, source columns, warehouse columns, tolerated new columns."""

    table: WarehouseTable
    source: list[SourceColumn]
    columns: list[tuple[str, str]]
    new: list[str]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]


@dataclass(frozen=True)
class _Bound:
    """The target's greatest key before the load's rows went in (read under the table lock);
    None when the target was empty."""

    key: Any

    @property
    def target_was_empty(self) -> bool:
        return self.key is None


@dataclass
class _Staged:
    """One table's hour: what was extracted and where it was staged."""

    plan: _Plan
    stage: str
    deleted: pa.Array | None  # soft-deleted users among the rows (tables with a user key)
    stats: ReconStats | None = None  # the source's figures, computed beside the extraction
    direct: _Bound | None = None  # COPYed straight into the target (every key above the bound)
    rows: int = 0
    excluded: int = 0
    uri: str = ""
    purge: list[str] = field(default_factory=list)  # keys to delete (soft-deleted users)
    dates: set[int] = field(default_factory=set)

    @property
    def source(self) -> ReconStats:
        if self.stats is None:
            raise RuntimeError(f"{self.plan.table.name}: the source figures were not computed")
        return self.stats


class _ParquetFile:
    """Batches appended to one local zstd Parquet file in row groups of ~128k rows. Only string
    columns are dictionary-encoded (codes, countries, user keys repeat; money and ids do not)."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        strings = [f.name for f in schema if pa.types.is_string(f.type)]
        self._writer = pq.ParquetWriter(
            path, schema, compression="zstd", use_dictionary=strings or False
        )
        self._pending: list[pa.RecordBatch] = []
        self._rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self._pending.append(batch)
        self._rows += batch.num_rows
        if self._rows >= PARQUET_ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(pa.Table.from_batches(self._pending))
        self._pending, self._rows = [], 0

    def close(self) -> Path:
        self._flush()
        self._writer.close()
        return self.path


class HourLoader:
    """Loads hours of changes from the shop into the warehouse (see the module docstring).

    `shop` is a psycopg connection to the source in autocommit mode;
    `warehouse` a DB-API connection (psycopg for PostgreSQL, redshift_connector for Redshift),
    outside a transaction. `work_mem` is set for the load transaction on PostgreSQL (the MERGE's
    and the reconciliation's hash joins). Staged objects go to
    `s3://<prefix>-staging/<object_prefix>/<table>/hour=YYYY-MM-DDTHH/part-00000.parquet`.
    """

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
        work_mem: str | None = "256MB",
        object_prefix: str = "warehouse",
        use_psql: bool | None = None,
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
        self.work_mem = work_mem
        self.object_prefix = object_prefix.strip("/")
        self.use_psql = use_psql  # None: psql when one is found, else psycopg
        self._psql: str | None = None  # the psql client of the current snapshot
        self._psql_setup: list[str] = []
        self.log = logger
        self.bucket = s3.bucket(STAGING_BUCKET_SUFFIX)
        # built now, not by the first upload: building a client is ~0.3 s of Python work, which
        # on the upload thread would hold the GIL against the streaming thread
        s3.client("s3")
        self._user_keys = UserKeys(pseudonym_key)

    def run(self, hour: datetime) -> HourLoad:
        started = time.perf_counter()
        end = hour + timedelta(hours=1)
        if self.engine == "redshift" and not self.role:
            raise ValueError("copy_iam_role_arn: Redshift COPY needs the IAM role")
        if getattr(self.shop, "autocommit", True) is not True:
            raise ValueError(
                "shop: the source connection must be in autocommit mode (the load reads the hour "
                "in a snapshot transaction of its own); nothing was loaded"
            )
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
            plans.append(_Plan(table, source, columns_of(table, source, self.engine), new))
            if new:
                self.log.warning(f"{table.source_table}: new column(s) {new} not loaded (policy)")
        result = HourLoad(hour)
        self._create_tables(plans)
        with tempfile.TemporaryDirectory(prefix="warehouse-hour-") as folder:
            if self.engine == "postgres":
                staged = self._load_postgres(plans, hour, end, Path(folder), result)
            else:
                staged = self._load_redshift(plans, hour, end, Path(folder), result)
        for item in staged:
            result.tables.append(
                TableLoad(
                    item.plan.table,
                    item.rows,
                    item.uri,
                    item.source,
                    item.plan.new,
                    item.excluded,
                    "direct" if item.direct is not None else "staged",
                )
            )
            if item.excluded:
                self.log.info(
                    f"{item.plan.table.name}: {item.excluded} row(s) of soft-deleted users excluded"
                )
        result.seconds = time.perf_counter() - started
        return result

    # -- the warehouse ---------------------------------------------------------------------
    def _create_tables(self, plans: list[_Plan]) -> None:
        """CREATE SCHEMA / TABLE IF NOT EXISTS, committed. On PostgreSQL under an advisory lock
        per schema: two loads creating the same table at once would otherwise collide."""
        conn = self.warehouse
        try:
            with conn.cursor() as cur:
                if self.engine == "postgres":
                    cur.execute(
                        "SELECT pg_advisory_xact_lock(%s)",
                        (advisory_key(DDL_LOCK_NAMESPACE, self.schema),),
                    )
                cur.execute(sql.create_schema(self.schema))
                for plan in plans:
                    cur.execute(
                        sql.create_table(self.schema, plan.table.name, plan.columns, plan.table.key)
                    )
                cur.execute(
                    sql.create_table(self.schema, "dim_date", list(DIM_DATE_COLUMNS), "date_key")
                )
            conn.commit()
        except BaseException:
            conn.rollback()
            raise

    def _load_postgres(
        self, plans: list[_Plan], hour: datetime, end: datetime, folder: Path, result: HourLoad
    ) -> list[_Staged]:
        """Stream every table into its stage (and its Parquet object) in the load transaction,
        then lock, MERGE and commit. Uploads run beside the next tables and the merge."""
        conn = self.warehouse
        staged: list[_Staged] = []
        uploads: list[Future[str]] = []
        clock = time.perf_counter()
        try:
            with (
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="stage-parquet") as pool,
                conn.cursor() as cur,
            ):
                if self.work_mem:
                    cur.execute("SELECT set_config('work_mem', %s, true)", (self.work_mem,))
                with (
                    self._source_snapshot(),
                    ThreadPoolExecutor(max_workers=1, thread_name_prefix="source-figures") as side,
                ):
                    direct = self._direct_tables(cur, plans, hour, end)
                    for plan in plans:
                        item = self._staged(plan, hour, end)
                        item.direct = direct.get(plan.table.name)
                        staged.append(item)
                        figures = self._figures_beside_stream(side, plan, hour, end)
                        uploads.append(self._stream_into_stage(cur, item, hour, end, folder, pool))
                        item.stats = figures.result()
                result.phases["extract_and_stage"] = time.perf_counter() - clock
                clock = time.perf_counter()
                self._merge_all(cur, staged, result, locked=bool(direct))
                result.phases["lock_merge_reconcile"] = time.perf_counter() - clock
                clock = time.perf_counter()
                for item, upload in zip(staged, uploads, strict=True):
                    item.uri = upload.result()  # the staged objects exist before commit
                result.phases["upload_wait"] = time.perf_counter() - clock
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return staged

    def _load_redshift(
        self, plans: list[_Plan], hour: datetime, end: datetime, folder: Path, result: HourLoad
    ) -> list[_Staged]:
        """Extract every table to its Parquet object first (Redshift COPYs from S3), then one
        transaction: lock, COPY into the stages, drop stale rows, MERGE, commit."""
        staged: list[_Staged] = []
        clock = time.perf_counter()
        with self._source_snapshot():
            for plan in plans:
                item = self._staged(plan, hour, end)
                item.stats = self._source_figures(plan, hour, end)
                staged.append(item)
                parquet = _ParquetFile(folder / f"{plan.table.name}.parquet", self._schema(plan))
                with _closing(self._batches(item, hour, end)) as batches:
                    for batch in batches:
                        parquet.write(batch)
                item.uri = self._upload(parquet.close(), self._object_key(plan.table, hour))
        result.phases["extract_and_upload"] = time.perf_counter() - clock
        clock = time.perf_counter()
        conn = self.warehouse
        try:
            with conn.cursor() as cur:
                # first in the transaction: Redshift's snapshot isolation wants the lock up front
                cur.execute(sql.lock_tables(self.schema, self._locked(staged), self.engine))
                for item in staged:
                    cur.execute(sql.create_stage(self.schema, item.plan.table.name, item.stage))
                    cur.execute(sql.redshift_copy(item.stage, item.uri, self.role or ""))
                self._merge_all(cur, staged, result, locked=True)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        result.phases["lock_copy_merge_reconcile"] = time.perf_counter() - clock
        return staged

    def _locked(self, staged: list[_Staged]) -> list[str]:
        return [item.plan.table.name for item in staged] + ["dim_date"]

    def _merge_all(
        self, cur: Any, staged: list[_Staged], result: HourLoad, *, locked: bool = False
    ) -> None:
        """Lock the targets (one statement, fixed order: no deadlock between loads), MERGE every
        stage, read the warehouse's reconciliation figures, delete soft-deleted users, add the dates."""
        clock = _Clock(result.phases)
        if not locked:
            cur.execute(sql.lock_tables(self.schema, self._locked(staged), self.engine))
            clock.lap("lock")
        dates: set[int] = set()
        for item in staged:
            table, stage = item.plan.table, item.stage
            bound: _Bound | None = item.direct
            if bound is not None:
                pass  # the rows went straight into the target as they streamed
            elif self.engine == "postgres":
                bound = self._insert_new_and_merge(cur, item)
            else:
                if table.version:
                    cur.execute(
                        sql.drop_older(self.schema, table.name, stage, table.key, table.version)
                    )
                cur.execute(sql.merge(self.schema, table.name, stage, table.key, item.plan.names))
            clock.lap("merge")
            if table.reconciled:
                result.figures[table.name] = self._warehouse_figures(cur, table, stage, bound)
                clock.lap("reconciliation_figures")
            if item.direct is None:
                cur.execute(f"DROP TABLE {sql.ident(stage)}")
            self._purge(cur, table, item.purge)
            dates.update(item.dates)
        self._merge_dates(cur, sorted(dates))
        clock.lap("drop_purge_dates")

    # -- the source ------------------------------------------------------------------------
    @contextmanager
    def _source_snapshot(self) -> Iterator[None]:
        """One REPEATABLE READ, READ ONLY transaction on the source for every read of the hour;
        with psql, exported so that each psql session reads in the same snapshot."""
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
                    psql.SQL("SET TRANSACTION SNAPSHOT {}")
                    .format(psql.Literal(row[0]))
                    .as_string(self.shop),
                ]
            try:
                yield
            finally:
                self._psql = None

    def _stream(self, shape: TableShape, query: psql.Composable) -> Iterator[pa.RecordBatch]:
        """The query's rows as Arrow batches: read by a psql child process in the snapshot (no
        Python work per row), else by psycopg on the snapshot's own connection."""
        # parsed on this thread: the load keeps both cores busy without the parser's threads
        if self._psql is None:
            return stream_batches(self.shop, shape, query, parse_threads=False)
        statement = psql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER true)").format(query)
        return psql_batches(
            self._psql,
            _psql_connect_kwargs(self.shop),
            self._psql_setup,
            statement.as_string(self.shop),
            shape,
            parse_threads=False,
        )

    def _hour_filter(self, hour: datetime, end: datetime) -> psql.Composable:
        return psql.SQL("t.updated_at >= {} AND t.updated_at < {}").format(
            psql.Literal(hour), psql.Literal(end)
        )

    def _relation(self, table: WarehouseTable) -> psql.Composable:
        return psql.SQL("{} AS t").format(psql.Identifier("public", table.source_table))

    def _staged(self, plan: _Plan, hour: datetime, end: datetime) -> _Staged:
        """A table's hour before its rows are read; the soft-deleted users among them are
        looked up first (on the snapshot's connection)."""
        table = plan.table
        deleted = None
        if USER_KEY in table.derived and not is_user_dimension(table):
            deleted = self._deleted_users(table, hour, end)
        return _Staged(plan, stage=f"stage_{table.name}", deleted=deleted)

    def _source_figures(self, plan: _Plan, hour: datetime, end: datetime) -> ReconStats:
        """The source's reconciliation figures of the hour, computed by the source in the
        snapshot."""
        table = plan.table
        where = self._hour_filter(hour, end)
        if is_user_dimension(table):  # reconcile like with like: soft-deleted users are not loaded
            where = psql.SQL("{} AND t.deleted_at IS NULL").format(where)
        key = table.key if table.key in table.taken else "user_id"
        return source_stats(self.shop, self._relation(table), key, list(table.money), where)

    def _figures_beside_stream(
        self, pool: ThreadPoolExecutor, plan: _Plan, hour: datetime, end: datetime
    ) -> Future[ReconStats]:
        """The source figures while the rows stream: on `pool` when psql streams them (the
        snapshot's own connection is free meanwhile), else first, on that connection."""
        if self._psql is not None:
            return pool.submit(self._source_figures, plan, hour, end)
        done: Future[ReconStats] = Future()
        done.set_result(self._source_figures(plan, hour, end))
        return done

    def _deleted_users(self, table: WarehouseTable, hour: datetime, end: datetime) -> pa.Array:
        """The soft-deleted users referenced by the table's rows of the hour, in one query."""
        query = psql.SQL(
            "SELECT DISTINCT t.user_id FROM {rel} JOIN {users} u ON u.user_id = t.user_id"
            " WHERE {hour} AND u.deleted_at IS NOT NULL"
        ).format(
            rel=self._relation(table),
            users=psql.Identifier("public", USERS_TABLE),
            hour=self._hour_filter(hour, end),
        )
        return pa.array([int(row[0]) for row in self.shop.execute(query).fetchall()], pa.int64())

    def _shape(self, plan: _Plan) -> TableShape:
        table = plan.table
        wanted = list(table.taken)
        if USER_KEY in table.derived:
            wanted.append("user_id")
        by_name = {c.name: c for c in plan.source}
        return TableShape(
            schema="public", table=table.source_table, columns=tuple(by_name[n] for n in wanted),
            primary_key=table.key if table.key in wanted else "user_id", time_column=None,
            version_column=None, subject_column=None, personal_columns=(),
            money_columns=table.money,
        )  # fmt: skip

    def _schema(self, plan: _Plan) -> pa.Schema:
        """The Arrow schema of the loaded batches (and of the staged Parquet)."""
        types = {c.name: c.arrow_type for c in plan.source}
        types[USER_KEY.name] = pa.string()
        types["date_key"] = pa.int32()
        return pa.schema([pa.field(name, types[name]) for name in plan.names])

    def _batches(self, item: _Staged, hour: datetime, end: datetime) -> Iterator[pa.RecordBatch]:
        """The hour's rows of one table as the warehouse takes them, batch by batch; counts,
        soft-deleted users' keys and dates are noted on `item`."""
        plan, table = item.plan, item.plan.table
        shape = self._shape(plan)
        schema = self._schema(plan)
        query = select_month(
            shape, self._relation(table), self._hour_filter(hour, end), ordered=False
        )
        with _closing(self._stream(shape, query)) as stream:
            yield from self._transformed(item, stream, schema, item.deleted)

    def _transformed(
        self,
        item: _Staged,
        stream: Iterator[pa.RecordBatch],
        schema: pa.Schema,
        deleted: pa.Array | None,
    ) -> Iterator[pa.RecordBatch]:
        table = item.plan.table
        keys = self._user_keys
        for batch in stream:
            if is_user_dimension(table):
                gone = pc.is_valid(batch.column("deleted_at"))
                count = pc.sum(gone).as_py() or 0
                if count:
                    item.excluded += count
                    purge = keys(batch.filter(gone).column("user_id")).to_pylist()
                    item.purge.extend(k for k in purge if k is not None)
                    batch = batch.filter(pc.invert(gone))
            arrays = {name: batch.column(name) for name in batch.schema.names}
            if USER_KEY in table.derived:
                ids = arrays["user_id"]
                if deleted is not None and len(deleted):
                    masked = without_users(ids, deleted)
                    item.excluded += masked.null_count - ids.null_count
                    ids = masked
                arrays[USER_KEY.name] = keys(ids)
            if "date_key" in schema.names:
                arrays["date_key"] = date_keys(arrays["created_at"])
                item.dates.update(k for k in pc.unique(arrays["date_key"]).to_pylist() if k)
            item.rows += batch.num_rows
            yield pa.RecordBatch.from_arrays([arrays[n] for n in schema.names], schema=schema)

    # -- staging ---------------------------------------------------------------------------
    def _stream_into_stage(
        self,
        cur: Any,
        item: _Staged,
        hour: datetime,
        end: datetime,
        folder: Path,
        pool: ThreadPoolExecutor,
    ) -> Future[str]:
        """Create the stage and COPY the hour's batches into it as they are extracted (binary,
        sent by a writer thread), or into the target itself for a direct table; the same batches
        are written to Parquet and uploaded by `pool`'s single worker (in order, at most a few
        batches behind). Returns the upload."""
        plan = item.plan
        into: tuple[str, ...] = (self.schema, plan.table.name)
        if item.direct is None:
            cur.execute(sql.create_stage(self.schema, plan.table.name, item.stage))
            into = (item.stage,)
        order = BinaryCopyEncoder.copy_order(plan.columns)
        encoder = BinaryCopyEncoder(order)
        parquet = _ParquetFile(folder / f"{plan.table.name}.parquet", self._schema(plan))
        pending: deque[Future[None]] = deque()
        statement = sql.copy_binary(into, [name for name, _ in order])
        with cur.copy(statement, writer=QueuedLibpqWriter(cur)) as copy:
            copy.write(HEADER)
            with _closing(self._batches(item, hour, end)) as batches:
                for batch in batches:
                    pending.append(pool.submit(parquet.write, batch))
                    copy.write(encoder.encode(batch))
                    while len(pending) > PARQUET_QUEUE_BATCHES or (pending and pending[0].done()):
                        pending.popleft().result()
            copy.write(TRAILER)
        key = self._object_key(plan.table, hour)

        def upload() -> str:  # runs after the writes (one worker, in order)
            for write in pending:
                write.result()
            return self._upload(parquet.close(), key)

        return pool.submit(upload)

    def _object_key(self, table: WarehouseTable, hour: datetime) -> str:
        """Deterministic: a re-run of the hour overwrites its own object."""
        return f"{self.object_prefix}/{table.name}/hour={hour:%Y-%m-%dT%H}/part-00000.parquet"

    def _upload(self, path: Path, key: str) -> str:
        """Upload a staged Parquet file (SSE-KMS and checksum as the S3 resource sets them);
        returns its URI."""
        self.s3.put_file(path, self.bucket, key, content_type="application/vnd.apache.parquet")
        return self.s3.uri(self.bucket, key)

    # -- merge helpers ---------------------------------------------------------------------
    def _purge(self, cur: Any, table: WarehouseTable, keys: list[str]) -> None:
        """Delete the rows of soft-deleted users (bound keys, in chunks)."""
        for start in range(0, len(keys), PURGE_CHUNK):
            chunk = tuple(keys[start : start + PURGE_CHUNK])
            cur.execute(sql.delete_keys(self.schema, table.name, table.key, len(chunk)), chunk)

    def _greatest_key(self, cur: Any, table: WarehouseTable) -> _Bound:
        cur.execute(sql.greatest_key(self.schema, table.name, table.key))
        row = cur.fetchone()
        return _Bound(row[0] if row else None)

    def _direct_tables(
        self, cur: Any, plans: list[_Plan], hour: datetime, end: datetime
    ) -> dict[str, _Bound]:
        """The tables whose every row of the hour has a key above the warehouse's greatest key
        (the hour's new orders during a backfill into an empty range, a first load): nothing of
        them can be in the target, so their rows are COPYed straight into it as they stream, no
        stage and no MERGE. That needs the targets' locks before the stream, so they are taken
        here (one statement, the same fixed order as `_merge_all`) when some table qualifies,
        and the bound is read again under them. Tables whose key is derived (the user key) are
        always staged."""
        candidates: dict[str, Any] = {}
        for plan in plans:
            table = plan.table
            if table.key not in table.taken:
                continue
            bound = self._greatest_key(cur, table)
            if bound.target_was_empty:
                candidates[table.name] = None
                continue
            where = self._hour_filter(hour, end)
            row = self.shop.execute(
                sql.least_key(self._relation(table), table.key, where)
            ).fetchone()
            if row is not None and row[0] is not None and row[0] > bound.key:
                candidates[table.name] = row[0]
        if not candidates:
            return {}
        names = [plan.table.name for plan in plans] + ["dim_date"]
        cur.execute(sql.lock_tables(self.schema, names, self.engine))
        direct: dict[str, _Bound] = {}
        for plan in plans:
            if plan.table.name not in candidates:
                continue
            bound = self._greatest_key(cur, plan.table)
            least = candidates[plan.table.name]
            if bound.target_was_empty or (least is not None and least > bound.key):
                direct[plan.table.name] = bound
        return direct

    def _insert_new_and_merge(self, cur: Any, item: _Staged) -> _Bound:
        """PostgreSQL: read the target's greatest key (under the lock), MERGE the staged rows at
        or below it, then INSERT those above it (they cannot be in the target; after the MERGE,
        whose join then sees only the rows that were there). Returns the bound."""
        table, names = item.plan.table, item.plan.names
        bound = self._greatest_key(cur, table)
        if bound.target_was_empty:
            cur.execute(
                sql.insert_new(self.schema, table.name, item.stage, table.key, names, above=False)
            )
            return bound
        merge = sql.merge_changed(
            self.schema, table.name, item.stage, table.key, names, table.version, up_to_key=True
        )
        cur.execute(merge, (bound.key,))
        insert = sql.insert_new(self.schema, table.name, item.stage, table.key, names, above=True)
        cur.execute(insert, (bound.key,))
        return bound

    def _warehouse_figures(
        self, cur: Any, table: WarehouseTable, stage: str, bound: _Bound | None
    ) -> ReconStats:
        """The reconciliation figures of the merged rows of the staged keys, computed by the
        warehouse in one row (see `sql.figures` and `sql.figures_split`)."""
        if bound is None:
            cur.execute(sql.figures(self.schema, table, stage))
        elif bound.target_was_empty:
            cur.execute(sql.figures_split(self.schema, table, stage, target_was_empty=True))
        else:
            statement = sql.figures_split(self.schema, table, stage, target_was_empty=False)
            cur.execute(statement, (bound.key, bound.key))
        row = cur.fetchone()
        return ReconStats(
            rows=int(row[0]),
            pk_sum=int(row[1]),
            pk_hash_sum=int(row[2]),
            money_cents={m: int(v) for m, v in zip(table.money, row[3:], strict=True)},
        )

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

"""Load one hour of changes into the warehouse: extract, pseudonymise, stage, COPY, MERGE.

1. The hour must be closed: the commit-safe high-water mark of the source (oldest open
   transaction, safety lag) has passed its end, so no row of the hour can still commit.
2. Every table is checked against the model (new, changed or vanished source columns are
   reported, naming the column) before anything is written.
3. The source is read in one REPEATABLE READ, READ ONLY snapshot, so the rows extracted and the
   source's reconciliation figures describe the same state. Rows whose `updated_at` falls in the
   hour stream out of PostgreSQL as CSV COPY parsed into Arrow batches (by a `psql` child that
   imports the snapshot when one is found, no Python work per row; else by psycopg); a table
   without rows in the hour is not read at all. Memory is bounded by the batch, not the hour.
   User ids become HMAC-SHA256 keys (computed once per distinct id) and personal columns are
   never selected; each table is written as Parquet (by a
   background thread) to the staging bucket under a deterministic key.
4. One warehouse transaction loads every table, then MERGEs under the tables' locks (taken in
   one statement, one fixed order):
   - PostgreSQL: the batches already in memory are sent as they stream through
     `COPY FROM STDIN (FORMAT binary)` (`warehouse/stream.py`; the staged Parquet is not read
     back). Rows whose key is above the target's greatest key cannot be in the target: they go
     straight into it when all of the hour's rows ("direct") or at least half of them ("split",
     the others MERGEd from a stage) are such rows (`warehouse/routing.py`, which takes the
     locks before the stream then); otherwise every row goes into a stage (an UNLOGGED table
     of the session, created and dropped in the load's transaction, `sql.create_stage`) and,
     under the locks, the rows at or below the target's greatest key are MERGEd and those
     above it INSERTed without a join ("staged"). The MERGE updates a row only when the
     staged version is not older and something changed, so re-running an hour writes nothing;
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
into dim_users, and the soft delete is recorded as a deletion of their key at its version, which
deletes their dim_users row in the load's transaction (a user restored since, whose newer row a
later hour loaded first, stays); fact_orders rows of the hour whose user is soft-deleted are
loaded with `user_key` NULL. The hard delete
(`warehouse/eraser.py`) later nulls their older fact rows too.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from lifecycle_pipelines.archive.columns import read_columns
from lifecycle_pipelines.archive.memory import return_freed_memory, system_arrow_pool
from lifecycle_pipelines.archive.purge import ensure_source_schema
from lifecycle_pipelines.archive.stats import ReconStats
from lifecycle_pipelines.checks.gx import CheckOutcome
from lifecycle_pipelines.resources.s3 import S3Resource
from lifecycle_pipelines.search_sync.documents import commit_safe_high_water
from lifecycle_pipelines.warehouse import sql
from lifecycle_pipelines.warehouse.model import (
    TABLES,
    USER_KEY,
    Engine,
    check_source,
    columns_of,
)
from lifecycle_pipelines.warehouse.outcome import (
    HourLoad,
    HourNotClosed,
    ReconciliationFailed,
    TableLoad,
)
from lifecycle_pipelines.warehouse.plan import TableHour, TablePlan
from lifecycle_pipelines.warehouse.routing import Routing, lock_order
from lifecycle_pipelines.warehouse.source import HourSource
from lifecycle_pipelines.warehouse.staging import (
    STAGING_BUCKET_SUFFIX,
    ParquetStage,
    closing,
    stage_object_key,
)
from lifecycle_pipelines.warehouse.stream import stream_table_hour
from lifecycle_pipelines.warehouse.target import Bound, WarehouseTarget
from lifecycle_pipelines.warehouse.transform import (
    UserKeys,
    date_keys,
    is_user_dimension,
    without_users,
)

log = logging.getLogger(__name__)
DELETIONS_KEPT = timedelta(days=90)  # tombstones of source deletes outlive their hour's load


class _Clock:
    """Adds the seconds since the last lap to `phases[name]` (phases sum over tables)."""

    def __init__(self, phases: dict[str, float]) -> None:
        self.phases = phases
        self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases[name] = self.phases.get(name, 0.0) + now - self.last
        self.last = now


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
        reconcile: Callable[[HourLoad], CheckOutcome] | None = None,
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
        self.reconcile = reconcile  # run inside the load's transaction: a mismatch rolls back
        self._source = HourSource(shop, use_psql)  # use_psql None: psql when one is found
        self._target = WarehouseTarget(warehouse, engine, schema)
        self.log = logger
        self.bucket = s3.bucket(STAGING_BUCKET_SUFFIX)
        # built now, not by the first upload: building a client is ~0.3 s of Python work, which
        # on the upload thread would hold the GIL against the streaming thread
        s3.client("s3")
        self._user_keys = UserKeys(pseudonym_key)
        self._figure_keys = UserKeys(pseudonym_key)  # the source figures' (another thread)

    @property
    def use_psql(self) -> bool | None:
        """Stream the source rows through psql: None when one is found, True always, False
        never (psycopg)."""
        return self._source.use_psql

    @use_psql.setter
    def use_psql(self, value: bool | None) -> None:
        self._source.use_psql = value

    def run(self, hour: datetime) -> HourLoad:
        """Load the changes of `hour` (a UTC hour, on the hour) in one warehouse transaction.

        With a `reconcile` check, the hour's figures are checked before the commit and a
        mismatch rolls the load back (`ReconciliationFailed`): readers never see a wrong hour.
        Arrow allocates from malloc meanwhile (`system_arrow_pool`), and what the hour freed is
        handed back after it, so a backfill of many hours in one process stays flat."""
        try:
            with system_arrow_pool():
                return self._run(hour)
        finally:
            return_freed_memory()

    def _run(self, hour: datetime) -> HourLoad:
        started = time.perf_counter()
        on_the_hour = hour.replace(minute=0, second=0, microsecond=0)
        if hour.utcoffset() != timedelta(0) or hour != on_the_hour:
            raise ValueError(f"hour: {hour.isoformat()} is not a UTC hour on the hour")
        end = hour + timedelta(hours=1)
        if self.engine == "redshift" and not self.role:
            raise ValueError("copy_iam_role_arn: Redshift COPY needs the IAM role")
        if getattr(self.shop, "autocommit", True) is not True:
            raise ValueError(
                "shop: the source connection must be in autocommit mode (the load reads the hour "
                "in a snapshot transaction of its own); nothing was loaded"
            )
        if getattr(self.warehouse, "autocommit", False) is not False:
            raise ValueError(
                "warehouse: the warehouse connection must not be in autocommit mode (the load, "
                "its stages included, is one transaction); nothing was loaded"
            )
        if self.engine == "postgres" and isinstance(self.warehouse, psycopg.Connection):
            # The bound read under the targets' locks must see what other loads committed:
            # READ COMMITTED, whatever the server's default_transaction_isolation says.
            self.warehouse.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
        ensure_source_schema(self.shop)  # the deletion tombstones read below
        self._source.forget_old_deletions(datetime.now(UTC) - DELETIONS_KEPT)
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
            plans.append(TablePlan(table, source, columns_of(table, source, self.engine), new))
            if new:
                self.log.warning(f"{table.source_table}: new column(s) {new} not loaded (policy)")
        result = HourLoad(hour)
        added = self._target.create_tables([(plan.table, plan.columns) for plan in plans])
        if added:
            self.log.warning(f"warehouse columns added for new model columns: {added}")
        with tempfile.TemporaryDirectory(prefix="warehouse-hour-") as folder:
            if self.engine == "postgres":
                staged = self._load_postgres(plans, hour, end, Path(folder), result)
            else:
                staged = self._load_redshift(plans, hour, end, Path(folder), result)
        for item in staged:
            if item.excluded:
                self.log.info(
                    f"{item.plan.table.name}: {item.excluded} row(s) of soft-deleted users excluded"
                )
        result.seconds = time.perf_counter() - started
        return result

    def _load_postgres(
        self, plans: list[TablePlan], hour: datetime, end: datetime, folder: Path, result: HourLoad
    ) -> list[TableHour]:
        """Stream every table into its stage (and its Parquet object) in the load transaction,
        then lock, MERGE and commit. Uploads run beside the next tables and the merge."""
        conn = self.warehouse
        staged: list[TableHour] = []
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
                    self._source.snapshot(),
                    ThreadPoolExecutor(max_workers=1, thread_name_prefix="source-figures") as side,
                ):
                    routing = Routing(self._source, self._target, hour, end)
                    direct = routing.direct_tables(cur, plans)
                    for plan in plans:
                        item = self._staged(plan, hour, end)
                        item.direct, item.split = direct.get(plan.table.name, (None, False))
                        staged.append(item)
                        figures = self._figures_beside_stream(
                            side, plan, hour, end, routing.figures.get(plan.table.name)
                        )
                        key = stage_object_key(self.object_prefix, plan.table.name, hour)
                        upload_to = partial(self._upload, key=key)
                        batches = self._batches(item, hour, end)
                        uploads.append(
                            stream_table_hour(
                                cur,
                                item,
                                batches,
                                schema=self.schema,
                                folder=folder,
                                pool=pool,
                                upload=upload_to,
                            )
                        )
                        item.stats = figures.result()
                result.phases["extract_and_stage"] = time.perf_counter() - clock
                clock = time.perf_counter()
                self._merge_all(cur, staged, result, locked=bool(direct))
                result.phases["lock_merge_reconcile"] = time.perf_counter() - clock
                clock = time.perf_counter()
                for item, upload in zip(staged, uploads, strict=True):
                    item.uri = upload.result()  # the staged objects exist before commit
                result.phases["upload_wait"] = time.perf_counter() - clock
                self._check_before_commit(staged, result)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return staged

    def _load_redshift(
        self, plans: list[TablePlan], hour: datetime, end: datetime, folder: Path, result: HourLoad
    ) -> list[TableHour]:
        """Extract every table to its Parquet object first (Redshift COPYs from S3), then one
        transaction: lock, COPY into the stages, drop stale rows, MERGE, commit."""
        staged: list[TableHour] = []
        clock = time.perf_counter()
        with self._source.snapshot():
            for plan in plans:
                item = self._staged(plan, hour, end)
                item.stats = self._source.figures(plan.table, hour, end, self._figure_keys)
                staged.append(item)
                parquet = ParquetStage(
                    folder / f"{plan.table.name}.parquet", plan.batch_schema(), plan.table.key
                )
                with closing(self._batches(item, hour, end)) as batches:
                    for batch in batches:
                        parquet.write(batch)
                item.uri = self._upload(
                    parquet.close(), stage_object_key(self.object_prefix, plan.table.name, hour)
                )
        result.phases["extract_and_upload"] = time.perf_counter() - clock
        clock = time.perf_counter()
        conn = self.warehouse
        try:
            with conn.cursor() as cur:
                # first in the transaction: Redshift's snapshot isolation wants the lock up front
                self._target.lock(cur, self._locked(staged))
                for item in staged:
                    cur.execute(sql.create_stage(item.stage, item.plan.columns, "redshift"))
                    cur.execute(sql.redshift_copy(item.stage, item.uri, self.role or ""))
                self._merge_all(cur, staged, result, locked=True)
                self._check_before_commit(staged, result)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        result.phases["lock_copy_merge_reconcile"] = time.perf_counter() - clock
        return staged

    def _check_before_commit(self, staged: list[TableHour], result: HourLoad) -> None:
        """Record what every table received, then run the reconciliation (if any) while the
        load's transaction is still open; a failed check raises and the caller rolls back."""
        result.tables = [
            TableLoad(
                item.plan.table,
                item.rows,
                item.uri,
                item.source,
                item.plan.new,
                item.excluded,
                item.path,
            )
            for item in staged
        ]
        if self.reconcile is None:
            return
        clock = time.perf_counter()
        result.reconciliation = self.reconcile(result)
        result.phases["reconcile"] = time.perf_counter() - clock
        if not result.reconciliation.success:
            raise ReconciliationFailed(result.hour, result.reconciliation)

    def _locked(self, staged: list[TableHour]) -> list[str]:
        return lock_order([item.plan for item in staged])

    def _merge_all(
        self, cur: Any, staged: list[TableHour], result: HourLoad, *, locked: bool = False
    ) -> None:
        """Lock the targets (one statement, fixed order: no deadlock between loads), MERGE every
        stage, read the warehouse's reconciliation figures, delete soft-deleted users, add the
        dates."""
        clock = _Clock(result.phases)
        target = self._target
        if not locked:
            target.lock(cur, self._locked(staged))
            clock.lap("lock")
        dates: set[int] = set()
        hour = (result.hour, result.hour + timedelta(hours=1))
        for item in staged:
            table, stage = item.plan.table, item.stage
            # Staged rows a later hour (committed first) already wrote in a newer version are
            # rightly not written; their figures come from the stage. Redshift: before
            # drop_older removes them; PostgreSQL: only when the figures fall short (a join of
            # the stage that other loads do not pay).
            superseded = None
            if item.has_stage and self.engine == "redshift":
                superseded = target.superseded(cur, table, stage)
            bound: Bound | None = item.direct
            if bound is not None:
                if item.split:  # the new keys went straight into the target as they streamed
                    target.merge_staged(cur, table, stage, item.plan.names, bound)
            elif self.engine == "postgres":
                bound = target.insert_new_and_merge(cur, table, stage, item.plan.names)
            else:
                target.merge_redshift(cur, table, stage, item.plan.names)
            clock.lap("merge")
            via = stage if item.has_stage else None
            figures = target.figures(cur, table, via, bound)
            if item.has_stage and self.engine == "postgres" and figures != item.source:
                superseded = target.superseded(cur, table, stage)
            result.figures[table.name] = figures.plus(superseded) if superseded else figures
            clock.lap("reconciliation_figures")
            if item.has_stage:
                cur.execute(sql.drop_stage(stage))
            target.apply_deletions(cur, table, item.plan.key_type, hour, item.deletions)
            dates.update(item.dates)
        target.merge_dates(cur, sorted(dates))
        target.forget_old_deletions(cur, datetime.now(UTC) - DELETIONS_KEPT)
        clock.lap("drop_purge_dates")

    def _staged(self, plan: TablePlan, hour: datetime, end: datetime) -> TableHour:
        """A table's hour before its rows are read; whether it has any, and the soft-deleted
        users among them, are looked up first (on the snapshot's connection, before the source
        figures use it from another thread)."""
        table = plan.table
        changed = self._source.has_rows(table, hour, end)
        deleted = None
        if changed and USER_KEY in table.derived and not is_user_dimension(table):
            deleted = self._source.deleted_users(table, hour, end)
        stage = self._target.stage_for(table.name)
        staged = TableHour(plan, stage=stage, deleted=deleted, changed=changed)
        gone = self._source.deleted_keys(table, hour, end)
        if is_user_dimension(table):
            ids = pa.array([key for key, _ in gone], pa.int64())
            keys = self._user_keys(ids).to_pylist()
            gone = [(k, at) for k, (_, at) in zip(keys, gone, strict=True) if k is not None]
        staged.deletions = list(gone)
        return staged

    def _figures_beside_stream(
        self,
        pool: ThreadPoolExecutor,
        plan: TablePlan,
        hour: datetime,
        end: datetime,
        known: ReconStats | None = None,
    ) -> Future[ReconStats]:
        """The source figures while the rows stream: `known` when the routing already read
        them (same snapshot), else on `pool` when psql streams the rows (the snapshot's own
        connection is free meanwhile), else first, on that connection."""
        keys = self._figure_keys
        if known is None and self._source.psql_streams:
            return pool.submit(self._source.figures, plan.table, hour, end, keys)
        done: Future[ReconStats] = Future()
        done.set_result(known or self._source.figures(plan.table, hour, end, keys))
        return done

    def _batches(self, item: TableHour, hour: datetime, end: datetime) -> Iterator[pa.RecordBatch]:
        """The hour's rows of one table as the warehouse takes them, batch by batch; counts,
        soft-deleted users' keys and dates are noted on `item`."""
        plan, table = item.plan, item.plan.table
        if not item.changed:
            return
        shape = plan.source_shape()
        schema = plan.batch_schema()
        with closing(self._source.rows(shape, table, hour, end)) as stream:
            yield from self._transformed(item, stream, schema)

    def _transformed(
        self,
        item: TableHour,
        stream: Iterator[pa.RecordBatch],
        schema: pa.Schema,
    ) -> Iterator[pa.RecordBatch]:
        table = item.plan.table
        keys = self._user_keys
        deleted = item.deleted
        for batch in stream:
            if is_user_dimension(table):
                gone = pc.is_valid(batch.column("deleted_at"))
                count = pc.sum(gone).as_py() or 0
                if count:
                    item.excluded += count
                    leaving = batch.filter(gone)
                    # deleted by version, and kept in the warehouse: a slower load of an older
                    # hour cannot bring the user back, nor delete a restored user's newer row
                    gone_keys = keys(leaving.column("user_id")).to_pylist()
                    versions = leaving.column("updated_at").to_pylist()
                    item.deletions.extend(
                        (k, at) for k, at in zip(gone_keys, versions, strict=True) if k is not None
                    )
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
    def _upload(self, path: Path, key: str) -> str:
        """Upload a staged Parquet file (SSE-KMS and checksum as the S3 resource sets them);
        returns its URI."""
        self.s3.put_file(path, self.bucket, key, content_type="application/vnd.apache.parquet")
        return self.s3.uri(self.bucket, key)

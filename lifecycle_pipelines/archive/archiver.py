"""Archive one month of one data type: snapshot, extract, encrypt, upload, verify, record.

`archive_month` is the body of the archive asset. Its steps, each safe to repeat:

1. Check the partition (eligible month) and the policy against the real columns. Nothing is
   written when either is wrong.
2. Take a per-partition advisory lock in the control database, so two runs of one partition
   cannot both proceed.
3. A partition already verified or purged is not extracted again: its objects are the only copy
   of purged rows. The run confirms them (HeadObject: version and checksum) and stops.
4. In one REPEATABLE READ snapshot of the source: stream the parent rows and their children to
   Parquet parts (personal columns encrypted per subject, a row group at a time) through a
   `psql` child process when one is available (psycopg otherwise), and compute the source
   figures of every part with SQL on a second connection that imports the same snapshot.
5. Upload each part as soon as it is closed (policy storage class, SSE-KMS, SHA-256 checksum
   checked by S3) and read its figures back from the file, and insert it with its subject index
   into the manifest transaction, both on threads of their own while the extraction goes on;
   then upload the purge-keys object and commit the partition as `written`.
6. Verify every object with its Great Expectations suite (its figures against the source's),
   and that S3 holds exactly the verified bytes; only then mark the partition `verified`.

Nothing runs per row in Python except the AES-GCM call of each row, made by `map` over a
subject's rows; GX is imported on a thread while the extraction runs.
"""

from __future__ import annotations

import logging
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from psycopg import IsolationLevel, sql

from lifecycle_pipelines.archive import manifest
from lifecycle_pipelines.archive.columns import TableShape
from lifecycle_pipelines.archive.crypto import (
    SubjectKeyring,
    archived_schema,
    encrypt_personal,
)
from lifecycle_pipelines.archive.extract import (
    ARCHIVE_CSV_BLOCK_BYTES,
    PSQL_ENV,
    PartWriter,
    StagedPart,
    find_psql,
    psql_batches,
    select_month,
    stream_batches,
)
from lifecycle_pipelines.archive.memory import return_freed_memory, use_returning_arrow_pool
from lifecycle_pipelines.archive.month_folders import MonthFolders
from lifecycle_pipelines.archive.part_store import ArchivedTable, PartStore, StoredPart
from lifecycle_pipelines.archive.plan import (
    ArchiveMonth,
)
from lifecycle_pipelines.archive.scope import (
    check_shapes,
    month_relation,
    parent_key_range,
)
from lifecycle_pipelines.archive.stats import parts_source_stats
from lifecycle_pipelines.archive.subject_lookups import SubjectKeyLookups
from lifecycle_pipelines.archive.verify import (
    start_warm_up,
    verify_object,
)
from lifecycle_pipelines.checks.gx import CheckOutcome
from lifecycle_pipelines.control import ensure_control_schema
from lifecycle_pipelines.policy import DataTypePolicy
from lifecycle_pipelines.resources.postgres import PostgresResource
from lifecycle_pipelines.resources.s3 import S3Resource

log = logging.getLogger(__name__)

# Session settings of the extraction: UTC text timestamps; enough memory to sort a month by key
# without temporary files; no parallel workers (the client, not the scan, sets the pace, and
# workers would only take CPU from the rest of the run).
EXTRACTION_SETTINGS = (
    "TimeZone = 'UTC'",
    "work_mem = '64MB'",
    "max_parallel_workers_per_gather = 0",
)


class ArchiveExpired(RuntimeError):
    """The partition's archive has expired; there is nothing to archive or confirm."""


@dataclass
class ArchiveResult:
    """What one archive run did, for asset metadata and checks."""

    month: ArchiveMonth
    state: str
    objects: list[manifest.ObjectEntry] = field(default_factory=list)
    checks: dict[str, CheckOutcome] = field(default_factory=dict)
    source_rows: int = 0
    seconds: float = 0.0
    reused: bool = False
    schemas: dict[str, pa.Schema] = field(default_factory=dict)
    unlisted: int = 0  # objects in the month's folders the manifest does not list (confirming)
    round: int = 0  # 0: the month's first; later rounds archive rows left after a purge
    rows_before_round: int = 0  # parent rows archived by the earlier rounds

    @property
    def passed(self) -> bool:
        return all(outcome.success for outcome in self.checks.values())


def _keys_table(shape: TableShape, batch: pa.RecordBatch) -> pa.Table:
    pk = batch.column(shape.primary_key)
    version = (
        batch.column(shape.version_column)
        if shape.version_column
        else pa.nulls(batch.num_rows, pa.timestamp("us", tz="UTC"))
    )
    parent = batch.column(shape.foreign_key) if shape.foreign_key else pk
    return pa.table(
        {
            "table_name": pa.array([shape.table] * batch.num_rows, pa.string()),
            "pk": pk,
            "version": version,
            "parent_pk": parent,
        }
    )


@dataclass
class _RunContext:
    """What the steps of one archive run share: its staging folder, key ring, threads and the
    manifest transaction being built."""

    stack: ExitStack
    folder: Path
    keyring: SubjectKeyring
    uploads: ThreadPoolExecutor
    recorder: ThreadPoolExecutor
    record: manifest.WrittenPartition
    round: Round
    recorded: list[Future[Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Round:
    """The round a run writes: its number, the first part number of each table (after every
    earlier round's parts) and the parent rows the earlier rounds archived."""

    number: int = 0
    first_parts: dict[str, int] = field(default_factory=dict)
    rows_before: int = 0


class MonthArchiver:
    """Archives one month of one data type (see the module docstring)."""

    def __init__(
        self,
        *,
        data_type: str,
        policy: DataTypePolicy,
        month: ArchiveMonth,
        shop: PostgresResource,
        control: PostgresResource,
        s3: S3Resource,
        max_rows_per_object: int = 500_000,
        staging_dir: Path | None = None,
        run_id: str | None = None,
        logger: logging.Logger | Any = log,
        use_psql: bool | None = None,
    ) -> None:
        self.data_type = data_type
        self.policy = policy
        self.month = month
        self.shop = shop
        self.control = control
        self.s3 = s3
        if max_rows_per_object <= 0:
            raise ValueError(
                f"max_rows_per_object: must be a positive number of rows, got {max_rows_per_object}"
            )
        self.max_rows = max_rows_per_object
        self.staging_dir = staging_dir
        self.run_id = run_id
        self.log = logger
        self.use_psql = use_psql  # None: psql when one is found, else psycopg
        self.store = PartStore(s3, policy, data_type, month, logger)
        if not s3.sse_kms_key_id:
            raise ValueError("sse_kms_key_id: archival needs a KMS key to wrap subject keys")
        self.kms_key_id = s3.sse_kms_key_id

    # -- the run -----------------------------------------------------------------------
    def run(self) -> ArchiveResult:
        started = time.perf_counter()
        use_returning_arrow_pool()
        try:
            with self.shop.connect() as shop_conn:
                shapes = check_shapes(shop_conn, self.data_type, self.policy)
            with self.control.connect(autocommit=True) as control_conn:
                ensure_control_schema(control_conn)
                manifest.lock_partition(control_conn, self.data_type, self.month.month)
                existing = manifest.get_partition(control_conn, self.data_type, self.month.month)
                if existing is not None and existing.state == "expired":
                    raise ArchiveExpired(
                        f"partition_key: {self.month.label} was archived, purged and has expired "
                        "from the archive (its retention ended); nothing was changed"
                    )
                if existing is None:
                    result = self._archive(control_conn, shapes, Round())
                elif existing.state == "written":  # this round again (an earlier attempt)
                    result = self._archive(
                        control_conn, shapes, self._round(control_conn, existing)
                    )
                elif existing.state == "purged" and self._rows_left(shapes[0]):
                    result = self._archive(
                        control_conn, shapes, self._round(control_conn, existing, following=True)
                    )
                else:
                    result = self._confirm_existing(control_conn, existing, shapes)
        finally:
            return_freed_memory()
        result.seconds = time.perf_counter() - started
        return result

    def _rows_left(self, parent: TableShape) -> bool:
        """Whether rows of the month are still in the source (after its purge: rows changed or
        inserted after the snapshot)."""
        with self.shop.connect() as conn:
            return parent_key_range(conn, parent, self.month) is not None

    def _round(
        self, conn: Any, existing: manifest.PartitionEntry, following: bool = False
    ) -> Round:
        """The round to write: the partition's current one again, or the next (`following`),
        which continues each table's part numbers after every earlier round's objects."""
        number = existing.round + 1 if following else existing.round
        first: dict[str, int] = {}
        for entry in manifest.get_objects(conn, self.data_type, self.month.month):
            if entry.round < number:
                first[entry.table_name] = max(first.get(entry.table_name, 0), entry.part + 1)
        before = existing.total_rows if following else existing.rows_before_round
        if following:
            self.log.info(
                f"{self.month.label}: rows are left in the source after the purge of round "
                f"{existing.round}; archiving them as round {number}"
            )
        return Round(number, first, before)

    def _confirm_existing(
        self, conn: Any, existing: manifest.PartitionEntry, shapes: list[TableShape]
    ) -> ArchiveResult:
        """A verified/purged partition: check S3 still holds every recorded object version.

        The objects' schemas follow from the tables' (their bytes may be in Glacier), so the
        asset registers the partition in Glue again: a registration that failed after the
        verification is retried by re-running the month."""
        state = existing.state
        result = ArchiveResult(
            self.month,
            state,
            source_rows=existing.source_rows,
            reused=True,
            round=existing.round,
            rows_before_round=existing.rows_before_round,
        )
        result.schemas = {
            shape.table: archived_schema(
                shape.arrow_schema(), shape.personal_columns, shape.subject_column
            )
            for shape in shapes
        }
        outcome = CheckOutcome("reconciliation")
        client = self.s3.client("s3")
        for entry in manifest.get_objects(conn, self.data_type, self.month.month):
            args = {"Bucket": entry.bucket, "Key": entry.object_key, "ChecksumMode": "ENABLED"}
            if entry.version_id:
                args["VersionId"] = entry.version_id
            head = client.head_object(**args)
            outcome.evaluated += 1
            if head.get("ChecksumSHA256") != entry.sha256:
                outcome.success = False
                outcome.failures.append(f"{entry.object_key}: checksum differs from the manifest")
            result.objects.append(entry)
        result.checks = {"reconciliation": outcome}
        folders = self._folders(shapes)
        folders.ensure_marker(conn, existing.round)
        result.unlisted = folders.count_unlisted(conn, existing.round)
        self.log.info(
            f"{self.month.label} is already {state}: {len(result.objects)} objects confirmed in S3"
        )
        return result

    def _archive(self, control_conn: Any, shapes: list[TableShape], round_: Round) -> ArchiveResult:
        folders = self._folders(shapes)
        folders.refuse_unknown(round_.number)
        keyring = SubjectKeyring(control_conn, self.s3.client("kms"), self.kms_key_id)
        self.s3.client("s3")  # built once here; the upload thread shares it (thread-safe)
        gx_ready = start_warm_up()  # GX imports for seconds: overlap it with the extraction
        with ExitStack() as stack:
            folder = Path(
                stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="archive-", dir=self.staging_dir)
                )
            )
            # The manifest transaction runs on a connection and thread of its own: objects and
            # their subject index are inserted while the rest of the month is extracted.
            # Closing the connection without commit (any failure) rolls it all back.
            manifest_conn = self.control.connect()
            stack.callback(manifest_conn.close)
            uploads = stack.enter_context(ThreadPoolExecutor(1, "archive-upload"))
            recorder = stack.enter_context(ThreadPoolExecutor(1, "archive-manifest"))
            record = manifest.WrittenPartition(
                manifest_conn, self.data_type, self.month.month, round_.number
            )
            run = _RunContext(stack, folder, keyring, uploads, recorder, record, round_)
            tables, keys_path = self._extract(run, shapes)
            source_rows = sum(s.rows for s in tables[0].source)
            keys = (
                uploads.submit(self.store.upload_keys, keys_path, round_.number)
                if source_rows
                else None
            )
            entries = self.store.entries(tables)
            committed = recorder.submit(
                record.commit,
                source_rows=source_rows,
                keys=keys.result() if keys else None,
                objects=entries,
            )
            for step in [*run.recorded, committed]:
                step.result()
            result = ArchiveResult(
                self.month,
                "written",
                entries,
                source_rows=source_rows,
                round=round_.number,
                rows_before_round=round_.rows_before,
            )
            gx_ready.join()
            self._verify(tables, entries, result)
        if result.passed:
            folders.delete_strays(control_conn, entries, round_.number)
            manifest.mark_verified(control_conn, self.data_type, self.month.month)
            folders.write_marker(round_.number, entries)
            result.state = "verified"
            self.log.info(f"{self.month.label}: {len(entries)} objects verified")
        else:
            self.log.error(f"{self.month.label}: verification failed; the source is untouched")
        return result

    # -- steps -------------------------------------------------------------------------
    def _extract(
        self, run: _RunContext, shapes: list[TableShape]
    ) -> tuple[list[ArchivedTable], Path]:
        """Stream every table of the month to Parquet parts in one REPEATABLE READ snapshot.

        Work that does not need the main thread runs beside the extraction: each closed part
        is uploaded and read back (its figures) by the upload thread and inserted with its
        subject index into the manifest transaction by the manifest thread; a second shop
        connection that imports the same snapshot (`SET TRANSACTION SNAPSHOT`) computes each
        table's source figures with SQL."""
        parent = shapes[0]
        keys_path = run.folder / "purge-keys.parquet"
        keys_writer: pq.ParquetWriter | None = None
        tables: list[ArchivedTable] = []
        with ExitStack() as stack:
            conn = self.shop.connect()
            stack.callback(conn.close)
            conn.isolation_level = IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            row = conn.execute("SELECT clock_timestamp(), pg_export_snapshot()").fetchone()
            assert row is not None
            snapshot_at, snapshot_id = row
            for setting in EXTRACTION_SETTINGS:
                conn.execute(f"SET LOCAL {setting}")
            psql = find_psql() if self.use_psql is not False else None
            if self.use_psql and psql is None:
                raise FileNotFoundError(f"use_psql: no psql client found (set ${PSQL_ENV})")
            psql_setup = [
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                sql.SQL("SET TRANSACTION SNAPSHOT {}")
                .format(sql.Literal(snapshot_id))
                .as_string(conn),
                *(f"SET {setting}" for setting in EXTRACTION_SETTINGS),
            ]
            run.recorded.append(
                run.recorder.submit(run.record.begin, snapshot_at=snapshot_at, run_id=self.run_id)
            )
            side_conn = self.shop.connect()
            stack.callback(side_conn.close)
            side_conn.isolation_level = IsolationLevel.REPEATABLE_READ
            side_conn.read_only = True
            side = stack.enter_context(ThreadPoolExecutor(1, "archive-source-figures"))
            # First in the side thread's queue: the import must precede every query there.
            imported = side.submit(
                side_conn.execute,
                sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_id)),
            )
            for setting in EXTRACTION_SETTINGS:  # the same month bounds as the extraction's
                side.submit(side_conn.execute, f"SET LOCAL {setting}")
            parent_keys = side.submit(parent_key_range, side_conn, parent, self.month)
            subject_keys = self._subject_keys(run, parent)
            pending: list[tuple[TableShape, list[StagedPart], Future[Any]]] = []
            for shape in shapes:
                bounds = None if shape is parent else parent_keys.result()
                rel, where = month_relation(shape, parent, self.month, bounds)
                stored: list[Future[StoredPart]] = []
                encrypt = None
                if shape.personal_columns and shape.subject_column:
                    encrypt = partial(self._encrypt, shape, run.keyring, subject_keys)
                writer = PartWriter(
                    run.folder / shape.table,
                    shape.table,
                    partial(self.store.file_name, shape.table),
                    self.max_rows,
                    self.store.file_metadata(shape),
                    on_close=partial(self._part_closed, run, shape, stored),
                    transform=encrypt,
                    first_part=run.round.first_parts.get(shape.table, 0),
                )
                rows = 0
                query = select_month(shape, rel, where)
                if psql is not None:
                    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER true)")
                    batches = psql_batches(
                        psql,
                        self.shop.connection_kwargs(),
                        psql_setup,
                        statement.format(query).as_string(conn),
                        shape,
                        parse_threads=False,
                        block_bytes=ARCHIVE_CSV_BLOCK_BYTES,
                    )
                else:
                    batches = stream_batches(
                        conn,
                        shape,
                        query,
                        parse_threads=False,
                        block_bytes=ARCHIVE_CSV_BLOCK_BYTES,
                    )
                for batch in batches:
                    if encrypt is not None:
                        assert shape.subject_column is not None
                        subject_keys.request(batch.column(shape.subject_column))
                    writer.write(
                        pa.Table.from_batches([batch]), shape.primary_key, shape.subject_column
                    )
                    keys_table = _keys_table(shape, batch)
                    if keys_writer is None:
                        keys_writer = pq.ParquetWriter(
                            keys_path, keys_table.schema, compression="zstd"
                        )
                    keys_writer.write_table(keys_table)
                    rows += batch.num_rows
                    self.log.debug(f"{self.month.label}: {shape.table} {rows} rows extracted")
                parts = writer.close()
                imported.result()  # the snapshot import must have worked before any figure
                figures = side.submit(
                    parts_source_stats,
                    side_conn,
                    rel,
                    where,
                    shape.primary_key,
                    list(shape.money_columns),
                    [(part.pk_min, part.pk_max) for part in parts],
                )
                pending.append((shape, parts, figures))
                tables.append(ArchivedTable(shape, parts, [], stored))
            for archived, (shape, parts, figures) in zip(tables, pending, strict=True):
                stats = figures.result()
                if stats.outside.rows:
                    raise RuntimeError(
                        f"{self.month.label}: {shape.table} has {stats.outside.rows} rows in the "
                        "snapshot outside every extracted part; nothing was recorded"
                    )
                archived.source = stats.parts
                total_rows = sum(s.rows for s in stats.parts)
                self.log.info(
                    f"{self.month.label}: {shape.table} {total_rows} rows in {len(parts)} parts"
                )
            side_conn.rollback()
            conn.rollback()
        if keys_writer is not None:
            keys_writer.close()
        return tables, keys_path

    def _subject_keys(self, run: _RunContext, parent: TableShape) -> SubjectKeyLookups:
        """The month's subject keys, looked up on a control connection and thread of their own
        (autocommit: a new key is durable before anything is encrypted with it)."""
        if not (parent.personal_columns and parent.subject_column):
            return SubjectKeyLookups(None, None)
        keys_conn = self.control.connect(autocommit=True)
        run.stack.callback(keys_conn.close)
        pool = run.stack.enter_context(ThreadPoolExecutor(1, "archive-subject-keys"))
        return SubjectKeyLookups(
            pool, SubjectKeyring(keys_conn, self.s3.client("kms"), self.kms_key_id)
        )

    def _encrypt(
        self,
        shape: TableShape,
        keyring: SubjectKeyring,
        subject_keys: SubjectKeyLookups,
        table: pa.Table,
    ) -> pa.Table:
        """`table` (one row group) with its personal columns encrypted."""
        assert shape.subject_column is not None
        return encrypt_personal(
            table,
            table_name=shape.table,
            primary_key=shape.primary_key,
            subject_column=shape.subject_column,
            personal_columns=shape.personal_columns,
            keys=subject_keys.known(),
            fetch_missing=partial(subject_keys.fetch, keyring),
        )

    def _part_closed(
        self,
        run: _RunContext,
        shape: TableShape,
        stored: list[Future[StoredPart]],
        part: StagedPart,
    ) -> None:
        """A part is complete: upload it and add it to the manifest transaction."""
        stored.append(run.uploads.submit(self.store.store, shape, part))
        run.recorded.append(
            run.recorder.submit(
                run.record.add_object,
                table_name=shape.table,
                part=part.part,
                bucket=self.store.bucket,
                object_key=self.store.key(shape.table, part.part),
                storage_class=self.store.storage_class,
                subjects=part.subjects,
            )
        )

    def _folders(self, shapes: list[TableShape]) -> MonthFolders:
        return MonthFolders.of(self.s3, self.policy, self.month, shapes, self.log)

    def _verify(
        self,
        tables: list[ArchivedTable],
        entries: list[manifest.ObjectEntry],
        result: ArchiveResult,
    ) -> None:
        by_key = {(e.table_name, e.part): e for e in entries}
        for archived in tables:
            for part, stats, future in zip(
                archived.parts, archived.source, archived.stored, strict=True
            ):
                entry = by_key[(archived.shape.table, part.part)]
                result.schemas[archived.shape.table] = pq.read_schema(part.path)
                outcomes = verify_object(
                    part.path,
                    archived.shape,
                    suite_name=f"archive_{self.data_type}.{archived.shape.table}",
                    source=stats,
                    month=self.month,
                    s3=self.s3,
                    entry=entry,
                    figures=future.result().figures,
                )
                for name, outcome in outcomes.items():
                    if name in result.checks:
                        result.checks[name].merge(outcome)
                    else:
                        result.checks[name] = outcome

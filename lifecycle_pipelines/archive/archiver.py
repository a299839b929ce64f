"""Archive one month of one data type: snapshot, extract, encrypt, upload, verify, record.

`archive_month` is the body of the archive asset. Its steps, each safe to repeat:

1. Check the partition (eligible month) and the policy against the real columns. Nothing is
   written when either is wrong.
2. Take a per-partition advisory lock in the control database, so two runs of one partition
   cannot both proceed.
3. A partition already verified or purged is not extracted again: its objects are the only copy
   of purged rows. The run confirms them (HeadObject: version and checksum) and stops.
4. In one REPEATABLE READ snapshot of the source: stream the parent rows and their children to
   Parquet parts (personal columns encrypted per subject) and compute the source figures of
   every part with SQL.
5. Upload each part (policy storage class, SSE-KMS, SHA-256 checksum checked by S3) and the
   purge-keys object, and record the partition as `written` with its objects and subject index.
6. Verify every object with its Great Expectations suite against the source figures, and that
   S3 holds exactly the verified bytes; only then mark the partition `verified`.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from psycopg import IsolationLevel, sql

from lifecycle_pipelines.archive import manifest
from lifecycle_pipelines.archive.columns import TableShape, check_child, check_parent
from lifecycle_pipelines.archive.crypto import (
    ENCRYPTION_SCHEME,
    PERSONAL_COLUMN,
    SubjectKeyring,
    encrypt_personal,
    subject_ids,
)
from lifecycle_pipelines.archive.extract import PartWriter, StagedPart, select_month, stream_batches
from lifecycle_pipelines.archive.plan import (
    ARCHIVE_BUCKET_SUFFIX,
    ArchiveMonth,
    check_eligible,
    object_key,
)
from lifecycle_pipelines.archive.stats import ReconStats, parts_source_stats
from lifecycle_pipelines.archive.verify import verify_object
from lifecycle_pipelines.checks.gx import CheckOutcome
from lifecycle_pipelines.control import ensure_control_schema
from lifecycle_pipelines.policy import DataTypePolicy
from lifecycle_pipelines.resources.postgres import PostgresResource
from lifecycle_pipelines.resources.s3 import S3Resource

log = logging.getLogger(__name__)

KEYS_PREFIX = "_purge_keys"


@dataclass
class ArchivedTable:
    """The parts of one table of the partition and their source figures."""

    shape: TableShape
    parts: list[StagedPart]
    source: list[ReconStats]


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

    @property
    def passed(self) -> bool:
        return all(outcome.success for outcome in self.checks.values())


def check_partition(
    data_type: str, policy: DataTypePolicy, partition_key: str, today: date
) -> ArchiveMonth:
    """Parse and check a partition key; PartitionError if unknown, malformed or too recent."""
    month = ArchiveMonth.parse(data_type, partition_key)
    check_eligible(month, policy, today)
    return month


def check_shapes(conn: Any, data_type: str, policy: DataTypePolicy) -> list[TableShape]:
    """The parent and child shapes checked against the policy (ArchiveConfigError if wrong)."""
    parent = check_parent(conn, data_type, policy)
    return [parent] + [
        check_child(conn, data_type, i, child, parent) for i, child in enumerate(policy.children)
    ]


def _relation(
    shape: TableShape, parent: TableShape, month: ArchiveMonth
) -> tuple[sql.Composable, sql.Composable]:
    """(FROM clause, WHERE clause) selecting the month's rows of `shape` (literals only)."""
    start, end = sql.Literal(month.start), sql.Literal(month.end)
    if shape.foreign_key is None:
        assert shape.time_column is not None
        rel = sql.SQL("{} AS t").format(sql.Identifier(shape.schema, shape.table))
        time_col = sql.Identifier("t", shape.time_column)
    else:
        assert parent.time_column is not None
        rel = sql.SQL("{} AS t JOIN {} AS p ON t.{} = p.{}").format(
            sql.Identifier(shape.schema, shape.table),
            sql.Identifier(parent.schema, parent.table),
            sql.Identifier(shape.foreign_key),
            sql.Identifier(parent.primary_key),
        )
        time_col = sql.Identifier("p", parent.time_column)
    where = sql.SQL("{c} >= {s} AND {c} < {e}").format(c=time_col, s=start, e=end)
    return rel, where


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
    ) -> None:
        self.data_type = data_type
        self.policy = policy
        self.month = month
        self.shop = shop
        self.control = control
        self.s3 = s3
        self.max_rows = max_rows_per_object
        self.staging_dir = staging_dir
        self.run_id = run_id
        self.log = logger
        self.bucket = s3.bucket(ARCHIVE_BUCKET_SUFFIX)
        if not s3.sse_kms_key_id:
            raise ValueError("sse_kms_key_id: archival needs a KMS key to wrap subject keys")
        self.kms_key_id = s3.sse_kms_key_id

    # -- the run -----------------------------------------------------------------------
    def run(self) -> ArchiveResult:
        started = time.perf_counter()
        with self.shop.connect() as shop_conn:
            shapes = check_shapes(shop_conn, self.data_type, self.policy)
        with self.control.connect(autocommit=True) as control_conn:
            ensure_control_schema(control_conn)
            manifest.lock_partition(control_conn, self.data_type, self.month.month)
            existing = manifest.get_partition(control_conn, self.data_type, self.month.month)
            if existing is not None and existing.state != "written":
                result = self._confirm_existing(control_conn, existing.state, existing.source_rows)
            else:
                result = self._archive(control_conn, shapes)
        result.seconds = time.perf_counter() - started
        return result

    def _confirm_existing(self, conn: Any, state: str, source_rows: int) -> ArchiveResult:
        """A verified/purged partition: check S3 still holds every recorded object version."""
        result = ArchiveResult(self.month, state, source_rows=source_rows, reused=True)
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
        self.log.info(
            f"{self.month.label} is already {state}: {len(result.objects)} objects confirmed in S3"
        )
        return result

    def _archive(self, control_conn: Any, shapes: list[TableShape]) -> ArchiveResult:
        keyring = SubjectKeyring(control_conn, self.s3.client("kms"), self.kms_key_id)
        with tempfile.TemporaryDirectory(prefix="archive-", dir=self.staging_dir) as tmp:
            folder = Path(tmp)
            snapshot_at, tables, keys_path = self._extract(folder, shapes, keyring)
            source_rows = sum(s.rows for s in tables[0].source)
            entries = self._upload(tables)
            keys = self._upload_keys(keys_path) if source_rows else None
            manifest.record_written(
                control_conn,
                self.data_type,
                self.month.month,
                snapshot_at=snapshot_at,
                run_id=self.run_id,
                source_rows=source_rows,
                keys=keys,
                objects=entries,
            )
            result = ArchiveResult(self.month, "written", entries, source_rows=source_rows)
            self._verify(tables, entries, result)
        if result.passed:
            manifest.mark_verified(control_conn, self.data_type, self.month.month)
            result.state = "verified"
            self.log.info(f"{self.month.label}: {len(entries)} objects verified")
        else:
            self.log.error(f"{self.month.label}: verification failed; the source is untouched")
        return result

    # -- steps -------------------------------------------------------------------------
    def _extract(
        self, folder: Path, shapes: list[TableShape], keyring: SubjectKeyring
    ) -> tuple[datetime, list[ArchivedTable], Path]:
        parent = shapes[0]
        keys_path = folder / "purge-keys.parquet"
        keys_writer: pq.ParquetWriter | None = None
        tables: list[ArchivedTable] = []
        cipher_cache: dict[str, bytes | None] = {}
        with self.shop.connect() as conn:
            conn.isolation_level = IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            row = conn.execute("SELECT clock_timestamp()").fetchone()
            assert row is not None
            snapshot_at = row[0]
            conn.execute("SET LOCAL TimeZone = 'UTC'")
            for shape in shapes:
                rel, where = _relation(shape, parent, self.month)
                writer = PartWriter(
                    folder / shape.table,
                    shape.table,
                    partial(self._part_file_name, shape.table),
                    self.max_rows,
                    self._file_metadata(shape),
                )
                rows = 0
                for batch in stream_batches(conn, shape, select_month(shape, rel, where)):
                    table = pa.Table.from_batches([batch])
                    if shape.personal_columns and shape.subject_column:
                        wanted = [
                            s
                            for s in set(subject_ids(table.column(shape.subject_column)))
                            if s not in cipher_cache
                        ]
                        if wanted:
                            cipher_cache.update(keyring.keys(wanted, create=True))
                        table = encrypt_personal(
                            table,
                            table_name=shape.table,
                            primary_key=shape.primary_key,
                            subject_column=shape.subject_column,
                            personal_columns=shape.personal_columns,
                            keys=cipher_cache,
                        )
                    writer.write(table, shape.primary_key, shape.subject_column)
                    keys_table = _keys_table(shape, batch)
                    if keys_writer is None:
                        keys_writer = pq.ParquetWriter(
                            keys_path, keys_table.schema, compression="zstd"
                        )
                    keys_writer.write_table(keys_table)
                    rows += batch.num_rows
                    self.log.debug(f"{self.month.label}: {shape.table} {rows} rows extracted")
                parts = writer.close()
                stats = parts_source_stats(
                    conn,
                    rel,
                    where,
                    shape.primary_key,
                    list(shape.money_columns),
                    [(part.pk_min, part.pk_max) for part in parts],
                )
                if stats.outside.rows:
                    raise RuntimeError(
                        f"{self.month.label}: {shape.table} has {stats.outside.rows} rows in the "
                        "snapshot outside every extracted part; nothing was uploaded"
                    )
                total_rows = sum(s.rows for s in stats.parts)
                tables.append(ArchivedTable(shape, parts, stats.parts))
                self.log.info(
                    f"{self.month.label}: {shape.table} {total_rows} rows in {len(parts)} parts"
                )
            conn.rollback()
        if keys_writer is not None:
            keys_writer.close()
        return snapshot_at, tables, keys_path

    def _part_file_name(self, table: str, part: int) -> str:
        return Path(object_key(self.policy, table, self.month.month, part)).name

    def _file_metadata(self, shape: TableShape) -> dict[str, str]:
        metadata = {
            "lifecycle.data_type": self.data_type,
            "lifecycle.table": shape.table,
            "lifecycle.partition_month": self.month.month.isoformat(),
            "lifecycle.primary_key": shape.primary_key,
        }
        if shape.personal_columns:
            metadata.update(
                {
                    "lifecycle.encryption": ENCRYPTION_SCHEME,
                    "lifecycle.subject_column": shape.subject_column or "",
                    "lifecycle.personal_columns": json.dumps(
                        [[c, str(shape.column(c).arrow_type)] for c in shape.personal_columns]
                    ),
                    "lifecycle.personal_column": PERSONAL_COLUMN,
                }
            )
        return metadata

    def _upload(self, tables: list[ArchivedTable]) -> list[manifest.ObjectEntry]:
        storage_class = self.policy.archive_storage_class or "STANDARD"
        entries = []
        for archived in tables:
            for part, stats in zip(archived.parts, archived.source, strict=True):
                key = object_key(self.policy, archived.shape.table, self.month.month, part.part)
                _, checksum = part.sha256()
                with part.path.open("rb") as body:
                    response = self.s3.client("s3").put_object(
                        Bucket=self.bucket,
                        Key=key,
                        Body=body,
                        StorageClass=storage_class,
                        # botocore computes SHA-256 over the bytes it sends and S3 checks it;
                        # verification compares S3's figure with the verified file's digest.
                        # (A precomputed ChecksumSHA256 header would be ignored by moto.)
                        ChecksumAlgorithm="SHA256",
                        ContentType="application/vnd.apache.parquet",
                        **self.s3.encryption_args(),
                    )
                entries.append(
                    manifest.ObjectEntry(
                        table_name=archived.shape.table,
                        part=part.part,
                        bucket=self.bucket,
                        object_key=key,
                        version_id=response.get("VersionId"),
                        storage_class=storage_class,
                        row_count=part.rows,
                        size_bytes=part.size_bytes,
                        sha256=checksum,
                        pk_min=part.pk_min,
                        pk_max=part.pk_max,
                        pk_sum=stats.pk_sum,
                        pk_hash_sum=stats.pk_hash_sum,
                        money_sums=stats.money_text(),
                        subjects=dict(part.subjects),
                    )
                )
                self.log.info(
                    f"uploaded {self.s3.uri(self.bucket, key)} ({part.rows} rows, "
                    f"{part.size_bytes} bytes, {storage_class})"
                )
        return entries

    def _upload_keys(self, path: Path) -> tuple[str, str, str | None]:
        key = (
            f"{KEYS_PREFIX}/{self.policy.service}/{self.data_type}/"
            f"year={self.month.month:%Y}/month={self.month.month:%m}/keys.parquet"
        )
        with path.open("rb") as body:
            response = self.s3.client("s3").put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ChecksumAlgorithm="SHA256",
                ContentType="application/vnd.apache.parquet",
                **self.s3.encryption_args(),
            )
        return self.bucket, key, response.get("VersionId")

    def _verify(
        self,
        tables: list[ArchivedTable],
        entries: list[manifest.ObjectEntry],
        result: ArchiveResult,
    ) -> None:
        by_key = {(e.table_name, e.part): e for e in entries}
        for archived in tables:
            for part, stats in zip(archived.parts, archived.source, strict=True):
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
                )
                for name, outcome in outcomes.items():
                    if name in result.checks:
                        result.checks[name].merge(outcome)
                    else:
                        result.checks[name] = outcome

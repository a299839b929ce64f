"""Verification of one archived object before anything is purged.

The staged Parquet file is read back, one row group at a time, and reduced to its figures:
row count, NULLs per required column, key sum, key checksum, duplicated keys, money sums in
cents and the time column's bounds, computed with Arrow and NumPy from the file's bytes (no
per-row Python, memory bounded by one row group whatever the object's size). Its Great
Expectations suite then checks the schema (column names and Arrow types), completeness
(objects not empty, required columns without NULLs) and reconciliation of those figures
against the ones PostgreSQL computed in the extraction snapshot (row count, key sum, key
checksum, money sums in cents, every row inside the month). Then S3 must report, for the
recorded version, the SHA-256 of exactly those verified bytes: S3 checked the checksum on
upload, so the durable copy is the verified file. This is what makes verification possible for
GLACIER objects, which S3 will not return until restored.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lifecycle_pipelines.archive.columns import TableShape
from lifecycle_pipelines.archive.manifest import ObjectEntry
from lifecycle_pipelines.archive.plan import ArchiveMonth
from lifecycle_pipelines.archive.stats import ReconStats, cents, pk_hash
from lifecycle_pipelines.checks.gx import (
    CheckOutcome,
    figures_frame,
    load_suite,
    schema_frame,
    validate,
)
from lifecycle_pipelines.resources.s3 import S3Resource

_LOW32 = np.int64(0xFFFFFFFF)


def exact_sum(values: np.ndarray) -> int:
    """The exact sum of an int64 array (no wrap-around, whatever the values)."""
    if values.size == 0:
        return 0
    values = values.astype(np.int64, copy=False)
    high = int(np.sum(values >> 32))  # each term < 2^31: exact for < 2^32 values
    low = int(np.sum(values & _LOW32, dtype=np.uint64))  # each term < 2^32
    return (high << 32) + low


def money_cents(column: pa.Array | pa.ChunkedArray) -> int:
    """The exact sum in integer cents of a decimal money column (NULLs count as 0), as
    PostgreSQL's `stats.cents_sum_sql` computes it."""
    if isinstance(column, pa.ChunkedArray):
        return sum(money_cents(chunk) for chunk in column.chunks)
    if (
        pa.types.is_decimal128(column.type)
        and column.type.scale == 2
        and column.offset == 0
        and len(column)
    ):
        # Scale 2: the unscaled 128-bit integers are the cents. Little-endian (low, high)
        # int64 pairs; exact while every value fits in 64 bits (high = sign of low).
        words = np.frombuffer(column.buffers()[1], dtype=np.int64, count=2 * len(column))
        low, high = words[0::2], words[1::2]
        if column.null_count:
            valid = np.asarray(column.is_valid())
            low, high = low[valid], high[valid]
        if np.array_equal(high, low >> 63):
            return exact_sum(low)
    return exact_sum(cents(column))


@dataclass
class ObjectFigures:
    """The figures of one archived object, accumulated batch by batch."""

    primary_key: str
    money: list[str]
    time_column: str | None
    rows: int = 0
    pk_sum: int = 0
    pk_hash_sum: int = 0
    pk_duplicates: int = 0
    nulls: dict[str, int] = field(default_factory=dict)
    cents: dict[str, int] = field(default_factory=dict)
    time_min_us: int | None = None
    time_max_us: int | None = None
    _last_key: int | None = None
    _ascending: bool = True

    @classmethod
    def for_shape(cls, shape: TableShape, present: Iterable[str]) -> ObjectFigures:
        names = set(present)
        return cls(
            primary_key=shape.primary_key,
            money=[m for m in shape.money_columns if m in names],
            time_column=shape.time_column if shape.time_column in names else None,
            nulls={c: 0 for c in dict.fromkeys([shape.primary_key, *shape.required_columns])},
            cents={m: 0 for m in shape.money_columns},
        )

    @property
    def read_columns(self) -> list[str]:
        """The columns whose values the figures need (NULL counts come from elsewhere)."""
        wanted = [self.primary_key, *self.money]
        if self.time_column:
            wanted.append(self.time_column)
        return list(dict.fromkeys(wanted))

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Add one batch holding `read_columns` (in file order)."""
        self.rows += batch.num_rows
        keys_column = batch.column(self.primary_key)
        keys = np.asarray(pc.fill_null(keys_column, 0).to_numpy(zero_copy_only=False))
        keys = keys.astype(np.int64, copy=False)
        self.pk_sum += exact_sum(keys)
        self.pk_hash_sum += int(pk_hash(keys).sum())
        if keys.size:
            first = int(keys[0])
            step_down = self._last_key is not None and first <= self._last_key
            if step_down or (keys.size > 1 and bool((keys[1:] <= keys[:-1]).any())):
                self._ascending = False
            self._last_key = int(keys[-1])
        for name in self.money:
            self.cents[name] += money_cents(batch.column(name))
        if self.time_column:
            micros = pc.cast(
                pc.cast(batch.column(self.time_column), pa.timestamp("us")), pa.int64()
            )
            bounds = pc.min_max(micros)
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            if low is not None:
                self.time_min_us = low if self.time_min_us is None else min(self.time_min_us, low)
                self.time_max_us = high if self.time_max_us is None else max(self.time_max_us, high)

    @property
    def keys_ascending(self) -> bool:
        """Keys strictly ascending over every batch so far (then none is duplicated)."""
        return self._ascending

    def frame(self) -> pd.DataFrame:
        """The GX `rows` batch: one row per object, one column per figure."""
        columns: dict[str, Any] = {
            "rows": self.rows,
            "pk_sum": self.pk_sum,
            "pk_hash_sum": self.pk_hash_sum,
            "pk_duplicates": self.pk_duplicates,
        }
        columns.update({f"nulls_{name}": count for name, count in self.nulls.items()})
        columns.update({f"cents_{name}": total for name, total in self.cents.items()})
        if self.time_column:
            columns["time_min_us"] = self.time_min_us
            columns["time_max_us"] = self.time_max_us
        return figures_frame(columns)


def _duplicates(keys: np.ndarray) -> int:
    return int(keys.size - np.unique(keys).size)


def table_figures(table: pa.Table, shape: TableShape) -> ObjectFigures:
    """The figures of an object already in memory (e.g. a restored download)."""
    figures = ObjectFigures.for_shape(shape, table.column_names)
    for name in figures.nulls:
        figures.nulls[name] = table.column(name).null_count if name in table.column_names else -1
    figures.add(table.select(figures.read_columns))
    if not figures.keys_ascending:
        keys = pc.drop_null(table.column(shape.primary_key)).to_numpy()
        figures.pk_duplicates = _duplicates(keys)
    return figures


def file_figures(path: Path, shape: TableShape) -> ObjectFigures:
    """The figures of a Parquet file, streamed one row group at a time.

    NULL counts come from the row groups' column statistics where the writer recorded them
    (Parquet's null_count is exact) and from the values otherwise. Keys are expected in
    ascending order (the extraction orders by key); if they are not, a second pass over the
    key column counts duplicates exactly."""
    parquet = pq.ParquetFile(path)
    names = parquet.schema_arrow.names
    figures = ObjectFigures.for_shape(shape, names)
    wanted = figures.read_columns
    metadata = parquet.metadata
    positions = {metadata.schema.column(i).path: i for i in range(metadata.num_columns)}
    for group in range(metadata.num_row_groups):
        row_group = metadata.row_group(group)
        for name in figures.nulls:
            if name not in positions:
                figures.nulls[name] = -1  # a missing column: the schema check fails
                continue
            stats = row_group.column(positions[name]).statistics
            if stats is not None and stats.has_null_count:
                figures.nulls[name] += stats.null_count
            else:
                column = parquet.read_row_group(group, columns=[name]).column(0)
                figures.nulls[name] += column.null_count
        if all(c in names for c in wanted):
            figures.add(parquet.read_row_group(group, columns=wanted))
    if not all(c in names for c in wanted):
        figures.rows = metadata.num_rows
    elif not figures.keys_ascending:
        keys = parquet.read(columns=[shape.primary_key]).column(0)
        figures.pk_duplicates = _duplicates(pc.drop_null(keys).to_numpy())
    return figures


def rows_frame(table: pa.Table, shape: TableShape) -> pd.DataFrame:
    """The GX `rows` batch of an object held in memory: its figures, one row."""
    return table_figures(table, shape).frame()


def gx_parameters(source: ReconStats, month: ArchiveMonth) -> dict[str, Any]:
    """Suite parameters: the source figures and the month's bounds in epoch microseconds."""
    return {
        **source.as_parameters(),
        "month_start_us": _epoch_us(month.start),
        "month_end_us": _epoch_us(month.end),
    }


def _epoch_us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def check_stored_object(s3: S3Resource, entry: ObjectEntry) -> CheckOutcome:
    """S3 holds, under the recorded version, exactly the verified bytes and storage class."""
    outcome = CheckOutcome("reconciliation", evaluated=1)
    args = {"Bucket": entry.bucket, "Key": entry.object_key, "ChecksumMode": "ENABLED"}
    if entry.version_id:
        args["VersionId"] = entry.version_id
    head = s3.client("s3").head_object(**args)
    problems = []
    if head.get("ChecksumSHA256") != entry.sha256:
        problems.append("SHA-256 differs from the verified file")
    if head.get("ContentLength") != entry.size_bytes:
        problems.append(f"size {head.get('ContentLength')} != {entry.size_bytes}")
    stored_class = head.get("StorageClass", "STANDARD")
    if stored_class != entry.storage_class:
        problems.append(f"storage class {stored_class} != {entry.storage_class}")
    if problems:
        outcome.success = False
        outcome.failures.append(f"s3://{entry.bucket}/{entry.object_key}: " + "; ".join(problems))
    outcome.observed[f"{entry.object_key} sha256"] = "matches" if not problems else "differs"
    return outcome


_WARM_UP_SUITE = {
    "name": "archive-warm-up",
    "expectations": [
        {
            "type": "expect_table_row_count_to_be_between",
            "kwargs": {"min_value": 0},
            "meta": {"check": "completeness"},
        }
    ],
}


def warm_up() -> None:
    """Import Great Expectations and build its context (seconds, once per process) on a
    trivial frame, so that a thread can do it while the extraction runs."""
    validate(_WARM_UP_SUITE, {"rows": pd.DataFrame({"x": [0]})})


def start_warm_up() -> threading.Thread:
    """`warm_up` in a daemon thread; join it before the first validation."""
    thread = threading.Thread(target=warm_up, name="archive-gx-warm-up", daemon=True)
    thread.start()
    return thread


def validate_object(
    schema: pa.Schema,
    figures: ObjectFigures,
    *,
    suite_name: str,
    source: ReconStats,
    month: ArchiveMonth,
) -> dict[str, CheckOutcome]:
    """Run the object's suite on its schema and figures against the source figures."""
    return validate(
        load_suite(suite_name),
        {"schema": schema_frame(schema), "rows": figures.frame()},
        gx_parameters(source, month),
    )


def verify_object(
    path: Path,
    shape: TableShape,
    *,
    suite_name: str,
    source: ReconStats,
    month: ArchiveMonth,
    s3: S3Resource,
    entry: ObjectEntry,
    figures: ObjectFigures | None = None,
) -> dict[str, CheckOutcome]:
    """Validate the staged file with its suite and confirm S3 stores exactly that file.

    `figures` may be given when they were already computed from this file (e.g. while the
    upload ran); otherwise the file is read here."""
    outcomes = validate_object(
        pq.read_schema(path),
        figures if figures is not None else file_figures(path, shape),
        suite_name=suite_name,
        source=source,
        month=month,
    )
    stored = check_stored_object(s3, entry)
    if "reconciliation" in outcomes:
        outcomes["reconciliation"].merge(stored)
    else:
        outcomes["reconciliation"] = stored
    return outcomes

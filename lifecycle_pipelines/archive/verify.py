"""Verification of one archived object before anything is purged.

The staged Parquet file is read back and validated with its Great Expectations suite: schema
(column names and Arrow types), completeness (required columns not null, not empty) and
reconciliation against the figures PostgreSQL computed in the extraction snapshot (row count,
key sum, key checksum, money sums in cents, every row inside the month). Then S3 must report,
for the recorded version, the SHA-256 of exactly those verified bytes: S3 checked the checksum
on upload, so the durable copy is the verified file. This is what makes verification possible
for GLACIER objects, which S3 will not return until restored.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lifecycle_pipelines.archive.columns import TableShape
from lifecycle_pipelines.archive.manifest import ObjectEntry
from lifecycle_pipelines.archive.plan import ArchiveMonth
from lifecycle_pipelines.archive.stats import ReconStats, cents, pk_hash
from lifecycle_pipelines.checks.gx import CheckOutcome, load_suite, schema_frame, validate
from lifecycle_pipelines.resources.s3 import S3Resource


def _frame_column(column: pa.ChunkedArray) -> pd.Series | Any:
    """A column in a pandas form that GX evaluates vectorised (no per-row Python objects)."""
    if pa.types.is_decimal(column.type):
        return pc.cast(column, pa.float64()).to_pandas()  # NaN where NULL
    if pa.types.is_timestamp(column.type):
        return pc.cast(pc.cast(column, pa.timestamp("us")), pa.int64()).to_pandas()
    if pa.types.is_string(column.type) or pa.types.is_binary(column.type):
        return column.to_pandas(types_mapper=pd.ArrowDtype)
    return column.to_pandas()


def rows_frame(table: pa.Table, shape: TableShape) -> pd.DataFrame:
    """The GX `rows` batch: key and required columns, `_pk_hash`, `_cents_<money>` and
    `_epoch_us` (the time column as integer microseconds, cheap to bound).

    Timestamps appear as integer microseconds and decimals as floats (NULL stays NULL), so
    that null checks and sums run vectorised.
    """
    wanted = [shape.primary_key, *shape.required_columns]
    names = [n for n in dict.fromkeys(wanted) if n in table.column_names]
    frame = pd.DataFrame({name: _frame_column(table.column(name)) for name in names})
    if shape.primary_key in table.column_names:
        keys = table.column(shape.primary_key).to_numpy()
        frame[shape.primary_key] = keys
        frame["_pk_hash"] = pk_hash(keys)
    for money in shape.money_columns:
        if money in table.column_names:
            frame[f"_cents_{money}"] = cents(table.column(money))
    if shape.time_column and shape.time_column in table.column_names:
        micros = pc.cast(pc.cast(table.column(shape.time_column), pa.timestamp("us")), pa.int64())
        frame["_epoch_us"] = micros.to_numpy()
    return frame


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


def verify_object(
    path: Path,
    shape: TableShape,
    *,
    suite_name: str,
    source: ReconStats,
    month: ArchiveMonth,
    s3: S3Resource,
    entry: ObjectEntry,
) -> dict[str, CheckOutcome]:
    """Validate the staged file with its suite and confirm S3 stores exactly that file."""
    parquet = pq.ParquetFile(path)
    present = set(parquet.schema_arrow.names)
    needed = [shape.primary_key, *shape.required_columns, *shape.money_columns]
    if shape.time_column:
        needed.append(shape.time_column)
    table = parquet.read(columns=[c for c in dict.fromkeys(needed) if c in present])
    outcomes = validate(
        load_suite(suite_name),
        {"schema": schema_frame(parquet.schema_arrow), "rows": rows_frame(table, shape)},
        gx_parameters(source, month),
    )
    stored = check_stored_object(s3, entry)
    if "reconciliation" in outcomes:
        outcomes["reconciliation"].merge(stored)
    else:
        outcomes["reconciliation"] = stored
    return outcomes

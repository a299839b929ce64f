"""Streaming extraction of one month of one table into local Parquet parts.

PostgreSQL streams `COPY (SELECT ... ORDER BY pk) TO STDOUT (FORMAT csv)`; pyarrow parses the
stream in blocks with the source's exact column types; each batch has its personal columns
encrypted and is appended to a zstd Parquet part. Memory is bounded by the block and row-group
sizes whatever the month's size; a part rolls over after `max_rows_per_object` rows. Beside
each part the extractor keeps the subjects it holds (for the subject index) and the
(key, version) pairs the purge will need.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import sql

from lifecycle_pipelines.archive.columns import TableShape

log = logging.getLogger(__name__)

CSV_BLOCK_BYTES = 4 << 20
ROW_GROUP_ROWS = 128_000


@dataclass
class StagedPart:
    """One Parquet part written locally, ready to upload."""

    table: str
    part: int
    path: Path
    rows: int = 0
    pk_min: int | None = None
    pk_max: int | None = None
    subjects: Counter[str] = field(default_factory=Counter)

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def sha256(self) -> tuple[str, str]:
        """(hex, base64) SHA-256 of the file, as S3's ChecksumSHA256 reports it in base64."""
        digest = hashlib.sha256()
        with self.path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest(), base64.b64encode(digest.digest()).decode()


class CopyStream(io.RawIOBase):
    """A readable file over the chunks of a COPY TO STDOUT."""

    def __init__(self, chunks: Iterator[Any]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = memoryview(bytes(next(self._chunks)))
            except StopIteration:
                return 0
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


def _csv_options(shape: TableShape) -> tuple[pacsv.ReadOptions, pacsv.ConvertOptions]:
    read = pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES, use_threads=True)
    convert = pacsv.ConvertOptions(
        column_types={c.name: c.arrow_type for c in shape.columns},
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,  # PostgreSQL writes NULL unquoted, '' as ""
        true_values=["t"],
        false_values=["f"],
    )
    return read, convert


def select_month(
    shape: TableShape, relation: sql.Composable, where: sql.Composable
) -> sql.Composable:
    """`SELECT <columns> FROM relation WHERE where ORDER BY pk` (where uses literals only)."""
    return sql.SQL("SELECT {cols} FROM {rel} WHERE {w} ORDER BY {pk}").format(
        cols=sql.SQL(", ").join(sql.Identifier("t", c) for c in shape.column_names),
        rel=relation,
        w=where,
        pk=sql.Identifier("t", shape.primary_key),
    )


def stream_batches(
    conn: psycopg.Connection[Any], shape: TableShape, query: sql.Composable
) -> Iterator[pa.RecordBatch]:
    """Arrow batches of `query`'s rows, typed exactly as the source columns."""
    read, convert = _csv_options(shape)
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER true)").format(query)
    with conn.cursor() as cur, cur.copy(statement) as copy:
        stream = io.BufferedReader(CopyStream(iter(copy)), buffer_size=1 << 20)
        reader = pacsv.open_csv(stream, read_options=read, convert_options=convert)
        schema = shape.arrow_schema()
        for batch in reader:
            yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)


class PartWriter:
    """Writes batches into numbered Parquet parts under `folder`, rolling over by row count."""

    def __init__(
        self,
        folder: Path,
        table: str,
        file_name: Callable[[int], str],
        max_rows_per_object: int,
        metadata: dict[str, str],
    ) -> None:
        self.folder = folder
        self.table = table
        self.file_name = file_name
        self.max_rows = max_rows_per_object
        self.metadata = metadata
        self.parts: list[StagedPart] = []
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0

    def _open(self, schema: pa.Schema) -> StagedPart:
        part = StagedPart(
            self.table, len(self.parts), self.folder / self.file_name(len(self.parts))
        )
        part.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(
            part.path,
            schema.with_metadata({**(schema.metadata or {}), **self.metadata}),
            compression="zstd",
            compression_level=3,
            write_statistics=True,
        )
        self.parts.append(part)
        return part

    def _flush(self) -> None:
        if self._pending and self._writer is not None:
            self._writer.write_table(pa.concat_tables(self._pending), row_group_size=ROW_GROUP_ROWS)
        self._pending, self._pending_rows = [], 0

    def write(self, table: pa.Table, primary_key: str, subject_column: str | None) -> None:
        """Append `table` (already encrypted) to the current part, rolling over when full."""
        offset = 0
        while offset < table.num_rows:
            part = self.parts[-1] if self._writer is not None else self._open(table.schema)
            room = self.max_rows - part.rows
            if room <= 0:
                self.close_part()
                continue
            chunk = table.slice(offset, room)
            offset += chunk.num_rows
            keys = chunk.column(primary_key)
            bounds = pc.min_max(keys)
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            part.pk_min = low if part.pk_min is None else min(part.pk_min, low)
            part.pk_max = high if part.pk_max is None else max(part.pk_max, high)
            part.rows += chunk.num_rows
            if subject_column is not None:
                counts = pc.value_counts(pc.cast(chunk.column(subject_column), pa.string()))
                for item in counts.to_pylist():
                    if item["values"] is not None:
                        part.subjects[item["values"]] += item["counts"]
            self._pending.append(chunk)
            self._pending_rows += chunk.num_rows
            if self._pending_rows >= ROW_GROUP_ROWS:
                self._flush()

    def close_part(self) -> None:
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> list[StagedPart]:
        self.close_part()
        return self.parts

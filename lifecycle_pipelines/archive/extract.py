"""Streaming extraction of one month of one table into local Parquet parts.

PostgreSQL streams `COPY (SELECT ... ORDER BY pk) TO STDOUT (FORMAT csv)`; pyarrow parses the
stream in blocks with the source's exact column types; each row group has its personal columns
encrypted and is appended to a zstd Parquet part. The stream is read by a `psql` child process
when one is available (`find_psql`), in the extraction's snapshot (`SET TRANSACTION SNAPSHOT`),
straight into pyarrow's reader: no Python code runs per row (psycopg hands over one Python
object per row, which costs about a microsecond a row); without psql it is read with psycopg. Memory is bounded by the block and row-group
sizes whatever the month's size; a part rolls over after `max_rows_per_object` rows. Beside
each part the extractor keeps the subjects it holds (for the subject index) and the
(key, version) pairs the purge will need.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import logging
import os
import shutil
import subprocess
import tempfile
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
# The archive parses on its main thread in 1 MiB blocks: the threaded reader's read-ahead
# held ~25 MB more at the peak for no gain in speed (the main thread is the busy one).
ARCHIVE_CSV_BLOCK_BYTES = 1 << 20
ROW_GROUP_ROWS = 65_536
ZSTD_LEVEL = 3


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """How archive parts are written (the archiver's and the erasure rewrite's alike): zstd
    level 3 with statistics; dictionary encoding only for string columns (codes, countries,
    cities repeat; keys, money, timestamps and ciphertext do not: a dictionary the writer gives
    up on still costs its hashing and a dictionary page per column chunk); binary columns (the
    AES-GCM ciphertext, random bytes) stored without compression, which would gain nothing."""
    names = [f.name for f in schema]
    binary = {f.name for f in schema if pa.types.is_binary(f.type)}
    return {
        "compression": {n: "none" if n in binary else "zstd" for n in names},
        "compression_level": {n: ZSTD_LEVEL for n in names if n not in binary},
        "use_dictionary": [f.name for f in schema if pa.types.is_string(f.type)] or False,
        "write_statistics": True,
    }


@dataclass
class StagedPart:
    """One Parquet part written locally, ready to upload."""

    table: str
    part: int
    path: Path
    rows: int = 0
    pk_min: int | None = None
    pk_max: int | None = None
    subjects: dict[str, int] = field(default_factory=dict)  # rows per subject

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
    """A readable file over the chunks of a COPY TO STDOUT.

    PostgreSQL sends one chunk per row, so `readinto` fills the caller's whole buffer from as
    many chunks as fit (one Python call per buffer, not per row)."""

    def __init__(self, chunks: Iterator[Any]) -> None:
        self._chunks = chunks
        self._pending = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        target = memoryview(buffer).cast("B")
        room = len(target)
        filled = 0
        if self._pending:
            size = min(room, len(self._pending))
            target[:size] = self._pending[:size]
            self._pending = self._pending[size:]
            filled = size
        while filled < room and not self._done:
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self._done = True
                break
            size = len(chunk)
            if filled + size <= room:
                target[filled : filled + size] = chunk
                filled += size
            else:
                view = memoryview(bytes(chunk))
                take = room - filled
                target[filled:room] = view[:take]
                self._pending = view[take:]
                filled = room
        return filled


def _csv_options(
    shape: TableShape, parse_threads: bool = True, block_bytes: int = CSV_BLOCK_BYTES
) -> tuple[pacsv.ReadOptions, pacsv.ConvertOptions]:
    """CSV options for PostgreSQL's CSV COPY of `shape`. `parse_threads=False` parses on the
    calling thread: less CPU in all, better when the machine is busy with the rest of the load.
    A batch holds about `block_bytes` of CSV."""
    read = pacsv.ReadOptions(block_size=block_bytes, use_threads=parse_threads)
    convert = pacsv.ConvertOptions(
        column_types={c.name: c.arrow_type for c in shape.columns},
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,  # PostgreSQL writes NULL unquoted, '' as ""
        true_values=["t"],
        false_values=["f"],
    )
    return read, convert


def select_month(
    shape: TableShape, relation: sql.Composable, where: sql.Composable, *, ordered: bool = True
) -> sql.Composable:
    """`SELECT <columns> FROM relation WHERE where ORDER BY pk` (where uses literals only).
    Unordered, the rows stream as the scan finds them: no sort before the first row."""
    query = sql.SQL("SELECT {cols} FROM {rel} WHERE {w}").format(
        cols=sql.SQL(", ").join(sql.Identifier("t", c) for c in shape.column_names),
        rel=relation,
        w=where,
    )
    if not ordered:
        return query
    return sql.SQL("{} ORDER BY {}").format(query, sql.Identifier("t", shape.primary_key))


def stream_batches(
    conn: psycopg.Connection[Any],
    shape: TableShape,
    query: sql.Composable,
    *,
    parse_threads: bool = True,
    block_bytes: int = CSV_BLOCK_BYTES,
) -> Iterator[pa.RecordBatch]:
    """Arrow batches of `query`'s rows, typed exactly as the source columns."""
    read, convert = _csv_options(shape, parse_threads, block_bytes)
    statement = sql.SQL("COPY ({}) TO STDOUT (FORMAT csv, HEADER true)").format(query)
    with conn.cursor() as cur, cur.copy(statement) as copy:
        stream = io.BufferedReader(CopyStream(iter(copy)), buffer_size=1 << 20)
        reader = pacsv.open_csv(stream, read_options=read, convert_options=convert)
        schema = shape.arrow_schema()
        for batch in reader:
            yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)


PSQL_ENV = "LIFECYCLE_PSQL"


def find_psql() -> str | None:
    """The `psql` client that streams extractions: `$LIFECYCLE_PSQL` if set (empty: never use
    psql), else `psql` on the PATH, else the one the embedded stack's pgserver wheel ships."""
    configured = os.environ.get(PSQL_ENV)
    if configured is not None:
        return configured or None
    found = shutil.which("psql")
    if found:
        return found
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "pginstall" / "bin" / "psql"
        if bundled.is_file() and os.access(bundled, os.X_OK):
            return str(bundled)
    return None


def psql_batches(
    psql: str,
    connect_kwargs: dict[str, Any],
    setup: list[str],
    statement: str,
    shape: TableShape,
    *,
    parse_threads: bool = True,
    block_bytes: int = CSV_BLOCK_BYTES,
) -> Iterator[pa.RecordBatch]:
    """Arrow batches of a `COPY (...) TO STDOUT (FORMAT csv, HEADER true)` run by `psql`.

    `setup` are the statements run first in the same session (e.g. `BEGIN ISOLATION LEVEL
    REPEATABLE READ`, `SET TRANSACTION SNAPSHOT ...`, settings). The password travels in the
    child's environment only; a failing psql raises with its exit code and error output."""
    kwargs = dict(connect_kwargs)
    password = kwargs.pop("password", None)
    env = {**os.environ, "PGCLIENTENCODING": "UTF8"}
    env.pop("PGPASSWORD", None)
    if password is not None:
        env["PGPASSWORD"] = str(password)
    args = [
        psql,
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        psycopg.conninfo.make_conninfo(**kwargs),
    ]
    for command in [*setup, statement, "COMMIT"]:
        args += ["-c", command]
    read, convert = _csv_options(shape, parse_threads, block_bytes)
    schema = shape.arrow_schema()
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors, env=env
        )
        assert process.stdout is not None

        def failed() -> RuntimeError | None:
            code = process.wait()
            if code == 0:
                return None
            errors.seek(0)
            message = errors.read().decode(errors="replace").strip()
            return RuntimeError(f"psql exited with status {code}: {message}")

        try:
            reader = pacsv.open_csv(process.stdout, read_options=read, convert_options=convert)
            for batch in reader:
                yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)
        except BaseException as err:
            # Closing the pipe ends a psql still writing; one that failed by itself has
            # exited or is about to: its message says why the stream broke.
            process.stdout.close()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise err from None
            psql_error = failed() if isinstance(err, Exception) else None
            if psql_error is not None:
                raise psql_error from err
            raise
        process.stdout.close()
        if (psql_error := failed()) is not None:
            raise psql_error


def subject_counts(column: pa.ChunkedArray | pa.Array) -> dict[str, int]:
    """Rows per subject id (as text); rows without a subject are not counted."""
    counts = pc.value_counts(
        column if pa.types.is_integer(column.type) else pc.cast(column, pa.string())
    )
    values, numbers = counts.field("values"), counts.field("counts")
    if values.null_count:
        valid = pc.is_valid(values)
        values, numbers = values.filter(valid), numbers.filter(valid)
    return dict(zip(pc.cast(values, pa.string()).to_pylist(), numbers.to_pylist(), strict=True))


class PartWriter:
    """Writes batches into numbered Parquet parts under `folder`, rolling over by row count.

    Rows are buffered up to one row group (`ROW_GROUP_ROWS`); `transform` (e.g. the
    encryption of personal columns) is applied to each row group before it is written, so it
    works on large groups of rows; the part's schema is the transformed one."""

    def __init__(
        self,
        folder: Path,
        table: str,
        file_name: Callable[[int], str],
        max_rows_per_object: int,
        metadata: dict[str, str],
        on_close: Callable[[StagedPart], None] | None = None,
        transform: Callable[[pa.Table], pa.Table] | None = None,
        first_part: int = 0,
    ) -> None:
        if max_rows_per_object <= 0:
            raise ValueError(
                f"max_rows_per_object: must be a positive number of rows, got {max_rows_per_object}"
            )
        self.folder = folder
        self.on_close = on_close
        self.transform = transform
        self.table = table
        self.file_name = file_name
        self.max_rows = max_rows_per_object
        self.metadata = metadata
        self.first_part = first_part  # a later round continues the month's part numbers
        self.parts: list[StagedPart] = []
        self._current: StagedPart | None = None
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._subjects: list[pa.ChunkedArray] = []  # the current part's subject column

    def _open(self) -> StagedPart:
        number = self.first_part + len(self.parts)
        part = StagedPart(self.table, number, self.folder / self.file_name(number))
        part.path.parent.mkdir(parents=True, exist_ok=True)
        self.parts.append(part)
        self._current = part
        return part

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        self._pending, self._pending_rows = [], 0
        if self.transform is not None:
            table = self.transform(table)
        if self._writer is None:
            assert self._current is not None
            schema = table.schema
            self._writer = pq.ParquetWriter(
                self._current.path,
                schema.with_metadata({**(schema.metadata or {}), **self.metadata}),
                **parquet_options(schema),
            )
        self._writer.write_table(table, row_group_size=ROW_GROUP_ROWS)

    def write(self, table: pa.Table, primary_key: str, subject_column: str | None) -> None:
        """Append `table` to the current part, rolling over when full."""
        offset = 0
        while offset < table.num_rows:
            part = self._current if self._current is not None else self._open()
            room = self.max_rows - part.rows
            if room <= 0:
                self.close_part()
                continue
            chunk = table.slice(offset, min(room, ROW_GROUP_ROWS - self._pending_rows))
            offset += chunk.num_rows
            keys = chunk.column(primary_key)
            bounds = pc.min_max(keys)
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            part.pk_min = low if part.pk_min is None else min(part.pk_min, low)
            part.pk_max = high if part.pk_max is None else max(part.pk_max, high)
            part.rows += chunk.num_rows
            if subject_column is not None:
                self._subjects.append(chunk.column(subject_column))
            self._pending.append(chunk)
            self._pending_rows += chunk.num_rows
            if self._pending_rows >= ROW_GROUP_ROWS:
                self._flush()

    def close_part(self) -> None:
        part = self._current
        if part is None:
            return
        self._flush()
        if self._subjects:
            # Counted once per part: one value_counts over the part's subject column.
            chunks = [c for column in self._subjects for c in column.chunks]
            column_type = self._subjects[0].type
            part.subjects = subject_counts(pa.chunked_array(chunks, column_type))
            self._subjects = []
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._current = None
        if self.on_close is not None:
            self.on_close(part)

    def close(self) -> list[StagedPart]:
        self.close_part()
        return self.parts

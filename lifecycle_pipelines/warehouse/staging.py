"""The staged Parquet of an hourly load: batches appended to a local zstd file, then uploaded
to the staging bucket under a deterministic key (Redshift COPYs from it; PostgreSQL keeps it
as the record of what was loaded)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

STAGING_BUCKET_SUFFIX = "staging"
PARQUET_ROW_GROUP_ROWS = 128_000
# Room for every distinct user key of a row group in its dictionary. At Arrow's 1 MiB default
# the dictionary fills after ~16k keys and the rest of the column falls back to plain 64-digit
# hex: most of the file, and of its writing and upload time.
PARQUET_DICTIONARY_PAGE_BYTES = 8 << 20

T = TypeVar("T")


@contextmanager
def closing(iterator: Iterator[T]) -> Iterator[Iterator[T]]:
    """Close a generator when the block ends, also early (its COPY or transaction ends too)."""
    try:
        yield iterator
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def stage_object_key(prefix: str, table: str, hour: datetime) -> str:
    """Deterministic: a re-run of the hour overwrites its own object."""
    return f"{prefix}/{table}/hour={hour:%Y-%m-%dT%H}/part-00000.parquet"


class ParquetStage:
    """Batches appended to one local zstd Parquet file in row groups of ~128k rows. Only string
    columns are dictionary-encoded (codes, countries, user keys repeat; money and ids do not),
    with dictionaries of up to `PARQUET_DICTIONARY_PAGE_BYTES`; not the table's `key` (every
    value is distinct: a dictionary would only add the indices)."""

    def __init__(self, path: Path, schema: pa.Schema, key: str | None = None) -> None:
        self.path = path
        strings = [f.name for f in schema if pa.types.is_string(f.type) and f.name != key]
        self._writer = pq.ParquetWriter(
            path,
            schema,
            compression="zstd",
            use_dictionary=strings or False,
            dictionary_pagesize_limit=PARQUET_DICTIONARY_PAGE_BYTES,
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

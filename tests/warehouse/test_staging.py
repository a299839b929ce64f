"""The staged Parquet of an hourly load (a local file, no store)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lifecycle_pipelines.warehouse.staging import (
    PARQUET_ROW_GROUP_ROWS,
    ParquetStage,
    stage_object_key,
)

SCHEMA = pa.schema([("order_id", pa.int64()), ("user_key", pa.string())])


def _batch(start: int, rows: int, users: int) -> pa.RecordBatch:
    ids = list(range(start, start + rows))
    keys = [hashlib.sha256(str(i % users).encode()).hexdigest() for i in ids]
    return pa.RecordBatch.from_arrays([pa.array(ids, pa.int64()), pa.array(keys)], schema=SCHEMA)


def test_batches_are_written_in_order_in_row_groups_of_the_set_size(tmp_path: Path) -> None:
    stage = ParquetStage(tmp_path / "t.parquet", SCHEMA)
    batches = [_batch(i * 50_000, 50_000, 1_000) for i in range(4)]
    for batch in batches:
        stage.write(batch)
    table = pq.read_table(stage.close())
    assert table.equals(pa.Table.from_batches(batches))
    metadata = pq.ParquetFile(tmp_path / "t.parquet").metadata
    sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    assert sizes == [150_000, 50_000] and sizes[0] >= PARQUET_ROW_GROUP_ROWS


def test_user_keys_stay_dictionary_encoded_with_tens_of_thousands_of_users(
    tmp_path: Path,
) -> None:
    """40k distinct 64-digit keys overflow Arrow's default 1 MiB dictionary page; the column
    would then fall back to plain values for most of its rows (2.7x the bytes here)."""
    rows, users = 120_000, 40_000
    stage = ParquetStage(tmp_path / "t.parquet", SCHEMA)
    stage.write(_batch(0, rows, users))
    column = pq.ParquetFile(stage.close()).metadata.row_group(0).column(1)
    assert column.path_in_schema == "user_key"
    assert "RLE_DICTIONARY" in column.encodings
    # each key once (64 digits and a 4-byte length), then at most 4 bytes per row
    assert column.total_uncompressed_size < users * (64 + 4) + rows * 4


def test_a_tables_own_key_is_not_dictionary_encoded(tmp_path: Path) -> None:
    """The user dimension's key is distinct on every row: a dictionary holds every value once
    and adds an index per row."""
    stage = ParquetStage(tmp_path / "t.parquet", SCHEMA, key="user_key")
    stage.write(_batch(0, 1_000, 1_000))
    column = pq.ParquetFile(stage.close()).metadata.row_group(0).column(1)
    assert column.path_in_schema == "user_key"
    assert "RLE_DICTIONARY" not in column.encodings


def test_the_stage_object_key_is_deterministic_per_table_and_hour() -> None:
    hour = datetime(2026, 11, 20, 9, tzinfo=UTC)
    key = stage_object_key("warehouse", "fact_orders", hour)
    assert key == "warehouse/fact_orders/hour=2026-11-20T09/part-00000.parquet"
    assert stage_object_key("warehouse", "fact_orders", hour) == key

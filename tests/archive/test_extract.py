"""Extraction pieces without the stack: the psql stream, the COPY stream reader, parts."""

from __future__ import annotations

import io
import stat
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lifecycle_pipelines.archive import extract
from lifecycle_pipelines.archive.columns import SourceColumn, TableShape
from lifecycle_pipelines.archive.extract import CopyStream, PartWriter, find_psql, psql_batches

SHAPE = TableShape(
    schema="public",
    table="events",
    columns=(
        SourceColumn("event_id", "bigint", True),
        SourceColumn("user_id", "bigint", False),
        SourceColumn("amount", "numeric(12,2)", True),
        SourceColumn("note", "text", False),
    ),
    primary_key="event_id",
    time_column=None,
    version_column=None,
    subject_column="user_id",
    personal_columns=(),
    money_columns=("amount",),
)


def _fake_psql(tmp_path: Path, stdout: str, code: int = 0, stderr: str = "") -> str:
    (tmp_path / "out.csv").write_text(stdout)
    script = tmp_path / "psql"
    script.write_text(
        f"#!/bin/sh\ncat '{tmp_path / 'out.csv'}'\necho '{stderr}' >&2\nexit {code}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_psql_output_is_parsed_with_the_source_types(tmp_path: Path) -> None:
    csv = 'event_id,user_id,amount,note\n1,7,12.50,""\n2,,0.01,\n3,7,100.00,"a,b"\n'
    batches = list(psql_batches(_fake_psql(tmp_path, csv), {"host": "h"}, [], "COPY", SHAPE))
    table = pa.Table.from_batches(batches)
    assert table.schema == SHAPE.arrow_schema()
    assert table.to_pylist()[1] == {
        "event_id": 2,
        "user_id": None,
        "amount": Decimal("0.01"),
        "note": None,
    }
    assert table.column("note").to_pylist() == ["", None, "a,b"]


def test_a_failing_psql_raises_with_its_message(tmp_path: Path) -> None:
    psql = _fake_psql(tmp_path, "event_id,user_id,amount,note\n1,7,1", 3, "FATAL: no access")
    with pytest.raises(RuntimeError, match=r"psql exited with status 3: FATAL: no access"):
        list(psql_batches(psql, {"host": "h", "password": "secret"}, [], "COPY", SHAPE))


def test_psql_can_be_chosen_or_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(extract.PSQL_ENV, "")
    assert find_psql() is None
    monkeypatch.setenv(extract.PSQL_ENV, "/opt/pg/bin/psql")
    assert find_psql() == "/opt/pg/bin/psql"


def test_copy_stream_fills_whole_buffers_from_row_chunks() -> None:
    rows = [f"{i},{'x' * (i % 50)}\n".encode() for i in range(5000)]
    reader = io.BufferedReader(CopyStream(iter(rows)), buffer_size=4096)
    assert reader.read() == b"".join(rows)
    raw = CopyStream(iter(rows))
    buffer = bytearray(1000)
    assert raw.readinto(buffer) == 1000  # many rows per call


def test_parts_roll_over_and_transform_whole_row_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(extract, "ROW_GROUP_ROWS", 4)
    closed: list[extract.StagedPart] = []
    seen: list[int] = []

    def transform(table: pa.Table) -> pa.Table:
        seen.append(table.num_rows)
        return table.drop_columns(["note"])

    writer = PartWriter(
        tmp_path,
        "events",
        lambda part: f"events-{part}.parquet",
        10,
        {"lifecycle.table": "events"},
        on_close=closed.append,
        transform=transform,
    )
    for start in range(0, 25, 3):
        size = min(3, 25 - start)
        batch = pa.table(
            {
                "event_id": pa.array(range(start, start + size), pa.int64()),
                "user_id": pa.array([i % 3 for i in range(start, start + size)], pa.int64()),
                "note": pa.array(["n"] * size),
            }
        )
        writer.write(batch, "event_id", "user_id")
    parts = writer.close()
    assert [p.rows for p in parts] == [10, 10, 5]
    assert closed == parts
    assert max(seen) == 4 and sum(seen) == 25
    assert [(p.pk_min, p.pk_max) for p in parts] == [(0, 9), (10, 19), (20, 24)]
    assert parts[0].subjects == {"0": 4, "1": 3, "2": 3}
    first = pq.ParquetFile(parts[0].path)
    assert first.schema_arrow.names == ["event_id", "user_id"]
    assert first.schema_arrow.metadata[b"lifecycle.table"] == b"events"
    assert [first.metadata.row_group(i).num_rows for i in range(first.num_row_groups)] == [4, 4, 2]


def test_parts_dictionary_encode_only_strings_and_store_ciphertext_uncompressed(
    tmp_path: Path,
) -> None:
    writer = PartWriter(tmp_path, "orders", lambda part: f"orders-{part}.parquet", 100, {})
    writer.write(
        pa.table(
            {
                "order_id": pa.array(range(50), pa.int64()),
                "status": pa.array(["paid", "shipped"] * 25),
                "_personal": pa.array([bytes([i]) * 40 for i in range(50)], pa.binary()),
            }
        ),
        "order_id",
        None,
    )
    chunks = pq.ParquetFile(writer.close()[0].path).metadata.row_group(0)
    columns = {chunks.column(i).path_in_schema: chunks.column(i) for i in range(3)}
    assert columns["order_id"].compression == columns["status"].compression == "ZSTD"
    assert columns["_personal"].compression == "UNCOMPRESSED"
    assert "RLE_DICTIONARY" in columns["status"].encodings
    assert not {"RLE_DICTIONARY", "PLAIN_DICTIONARY"} & set(columns["order_id"].encodings)
    assert not {"RLE_DICTIONARY", "PLAIN_DICTIONARY"} & set(columns["_personal"].encodings)

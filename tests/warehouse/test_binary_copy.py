"""The binary COPY encoder against PostgreSQL itself: every warehouse type, NULLs, signs, edges."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pytest

from lifecycle_pipelines.warehouse.binary_copy import (
    HEADER,
    TRAILER,
    BinaryCopyEncoder,
    UnsupportedType,
    encoder_for,
)

COLUMNS = [
    ("id", "BIGINT"),
    ("small", "SMALLINT"),
    ("medium", "INTEGER"),
    ("flag", "BOOLEAN"),
    ("ratio", "DOUBLE PRECISION"),
    ("day", "DATE"),
    ("at", "TIMESTAMPTZ"),
    ("local_at", "TIMESTAMP"),
    ("label", "VARCHAR(20)"),
    ("code", "CHAR(3)"),
    ("money", "NUMERIC(12,2)"),
    ("rate", "NUMERIC(10,4)"),
    ("fine", "NUMERIC(8,6)"),
    ("whole", "NUMERIC(5,0)"),
    ("huge", "NUMERIC(30,8)"),
    ("tiny", "NUMERIC(18,17)"),
]
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
ROWS: list[tuple[Any, ...]] = [
    (
        1, 7, 70_000, True, 0.5, date(2024, 2, 29), datetime(2026, 11, 20, 9, 7, 1, 123456, UTC),
        datetime(2026, 11, 20, 9, 7), "paid", "EUR", Decimal("1234.56"), Decimal("0.0001"),
        Decimal("12.345678"), Decimal("99999"), Decimal("1234567890123456789012.12345678"),
        Decimal("9.99999999999999999"),
    ),
    (
        -2, -32768, -2_147_483_648, False, -1e300, date(1970, 1, 1), EPOCH - timedelta(microseconds=1),
        datetime(1999, 12, 31, 23, 59, 59, 999999), "", "a  ", Decimal("-0.01"), Decimal("-123456.7890"),
        Decimal("-0.000001"), Decimal("-99999"), Decimal("-0.00000001"),
        Decimal("-0.00000000000000001"),
    ),
    (
        3, None, None, None, None, None, None, None, None, None, None, None, None, None, None,
        None,
    ),
    (
        9_223_372_036_854_775_807, 32767, 2_147_483_647, True, 0.0, date(1999, 12, 31),
        datetime(1900, 1, 1, tzinfo=UTC), datetime(2100, 1, 1), "ünïcødé ✓", "x€y",
        Decimal("9999999999.99"), Decimal("0"), Decimal("0.5"), Decimal("0"), Decimal("0"),
        Decimal("0"),
    ),
    (
        4, 0, 0, False, 3.25, date(2000, 1, 1), EPOCH, datetime(2000, 1, 1), "x" * 20, "abc",
        Decimal("-9999999999.99"), Decimal("100000.0000"), Decimal("-99.999999"), Decimal("10000"),
        Decimal("-9999999999999999999999.99999999"), Decimal("-1.5"),
    ),
]  # fmt: skip
ARROW = pa.schema(
    [
        ("id", pa.int64()),
        ("small", pa.int16()),
        ("medium", pa.int32()),
        ("flag", pa.bool_()),
        ("ratio", pa.float64()),
        ("day", pa.date32()),
        ("at", pa.timestamp("us", tz="UTC")),
        ("local_at", pa.timestamp("us")),
        ("label", pa.string()),
        ("code", pa.string()),
        ("money", pa.decimal128(12, 2)),
        ("rate", pa.decimal128(10, 4)),
        ("fine", pa.decimal128(8, 6)),
        ("whole", pa.decimal128(5, 0)),
        ("huge", pa.decimal128(30, 8)),
        ("tiny", pa.decimal128(18, 17)),
    ]
)


@pytest.fixture
def warehouse(local_stack: Any) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(local_stack[0].app_conninfo("warehouse")) as conn:
        conn.execute("SET TIME ZONE 'America/New_York'")  # the encoding must not depend on it
        body = ", ".join(f'"{name}" {kind}' for name, kind in COLUMNS)
        conn.execute(f"CREATE TEMP TABLE ours ({body})")
        conn.execute(f"CREATE TEMP TABLE theirs ({body})")
        yield conn
        conn.rollback()


def _copy_ours(conn: Any, table: pa.Table, columns: list[tuple[str, str]]) -> None:
    encoder = BinaryCopyEncoder(columns)
    names = ", ".join(f'"{name}"' for name, _ in columns)
    with conn.cursor().copy(f"COPY ours ({names}) FROM STDIN (FORMAT binary)") as copy:
        copy.write(HEADER)
        for batch in table.to_batches(max_chunksize=2):  # several batches, slices of buffers
            copy.write(encoder.encode(batch))
        copy.write(TRAILER)


def _rows(conn: Any, table: str) -> list[tuple[Any, ...]]:
    return conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()


@pytest.mark.parametrize("order", ["table", "fixed_first"])
def test_every_type_lands_exactly_as_psycopg_would_write_it(warehouse: Any, order: str) -> None:
    table = pa.Table.from_pylist([dict(zip(ARROW.names, r, strict=True)) for r in ROWS], ARROW)
    columns = COLUMNS if order == "table" else BinaryCopyEncoder.copy_order(COLUMNS)
    if order == "fixed_first":
        assert [n for n, _ in columns][-2:] == ["label", "code"]
    _copy_ours(warehouse, table, columns)
    with warehouse.cursor().copy("COPY theirs FROM STDIN") as copy:
        for row in ROWS:
            copy.write_row(row)
    assert _rows(warehouse, "ours") == _rows(warehouse, "theirs")
    assert len(_rows(warehouse, "ours")) == len(ROWS)


def test_an_empty_batch_and_a_sliced_batch_encode(warehouse: Any) -> None:
    table = pa.Table.from_pylist([dict(zip(ARROW.names, r, strict=True)) for r in ROWS], ARROW)
    encoder = BinaryCopyEncoder(COLUMNS)
    assert len(encoder.encode(table.slice(0, 0))) == 0
    sliced = table.slice(3, 2).combine_chunks()
    with warehouse.cursor().copy("COPY ours FROM STDIN (FORMAT binary)") as copy:
        copy.write(HEADER)
        copy.write(encoder.encode(sliced))
        copy.write(TRAILER)
    assert [r[0] for r in _rows(warehouse, "ours")] == [4, ROWS[3][0]]


def test_lossy_or_unknown_input_is_refused() -> None:
    with pytest.raises(UnsupportedType, match="blob"):
        encoder_for("blob", "BYTEA")
    too_precise = pa.array([Decimal("1.234")], pa.decimal128(10, 3))
    with pytest.raises(pa.ArrowInvalid):
        encoder_for("money", "NUMERIC(12,2)")(too_precise)
    with pytest.raises(TypeError, match="TIMESTAMPTZ"):
        encoder_for("at", "TIMESTAMPTZ")(pa.array([datetime(2026, 1, 1)], pa.timestamp("us")))
    zoned = pa.array(
        [datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))],
        pa.timestamp("us", tz="+02:00"),
    )
    fields = encoder_for("at", "TIMESTAMPTZ")(zoned)
    assert isinstance(fields, np.ndarray) and fields.shape == (1, 12)  # length, then 8 bytes

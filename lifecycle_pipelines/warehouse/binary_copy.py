"""Arrow batches as PostgreSQL binary COPY data, built column-wise (no Python loop over rows).

The local warehouse loads its stage with `COPY ... FROM STDIN (FORMAT binary)`: PostgreSQL then
reads numbers, numerics and timestamps in their binary form instead of parsing text, which is
most of the cost of a text or CSV COPY. Every field of a row is `int32 length` (-1 for NULL) and
the value in network byte order. Fixed-width fields, and the lengths of variable-width ones
(text, and any column with NULLs), go into NumPy matrices, one row per tuple; the values of the
variable-width fields stay Arrow binary arrays; `binary_join_element_wise` then concatenates the
matrices' rows and those values row by row, so the cost is a few vectorised passes per batch.

The encoding follows the warehouse type of each column (`warehouse/model.py`), and the Arrow
column is cast to that type first (a lossy cast fails):

| warehouse type | wire format |
|---|---|
| BIGINT, INTEGER, SMALLINT | big-endian int64 / int32 / int16 |
| BOOLEAN | one byte |
| DOUBLE PRECISION | big-endian IEEE 754 double |
| DATE | int32 days since 2000-01-01 |
| TIMESTAMP, TIMESTAMPTZ | int64 microseconds since 2000-01-01 (UTC for TIMESTAMPTZ) |
| VARCHAR(n), CHAR(n), TEXT | the UTF-8 bytes |
| NUMERIC(p,s) | ndigits, weight, sign, dscale, base-10000 digits (fixed count per column) |
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
TRAILER = struct.pack(">h", -1)
_PG_EPOCH_DAYS = 10_957  # 2000-01-01 - 1970-01-01
_PG_EPOCH_MICROS = _PG_EPOCH_DAYS * 86_400 * 1_000_000
_NUMERIC_POS, _NUMERIC_NEG = 0x0000, 0x4000
_EXACT = Context(prec=80)  # decimal128 has at most 38 digits: no rounding
_NUMERIC = re.compile(r"^NUMERIC\((\d+),\s*(\d+)\)$")
_TEXT = re.compile(r"^(VARCHAR|CHAR|CHARACTER VARYING|CHARACTER)\(\d+\)$|^TEXT$")
_FIXED: dict[str, tuple[pa.DataType, str]] = {
    "BIGINT": (pa.int64(), ">i8"),
    "INTEGER": (pa.int32(), ">i4"),
    "SMALLINT": (pa.int16(), ">i2"),
    "DOUBLE PRECISION": (pa.float64(), ">f8"),
}


class UnsupportedType(TypeError):
    """A warehouse type the binary encoder does not know; the message names the column."""


def _pieces(matrix: np.ndarray) -> pa.Array:
    """A binary array whose i-th value is row i of a C-contiguous (n, w) uint8 matrix."""
    n, width = matrix.shape
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    data = np.ascontiguousarray(matrix).reshape(-1)
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


@dataclass(frozen=True)
class Prefixed:
    """Variable-width fields as their fixed-width part, the (n, 4) lengths (-1 for NULL), and
    the values' bytes (empty for NULL): the lengths join the fixed-width columns before them,
    and no array of whole fields is built just to be joined again."""

    lengths: np.ndarray
    values: pa.Array


# An encoded column: an (n, w) uint8 matrix when every field has the same width (no NULL in a
# fixed-width column), else `Prefixed`.
Fields: TypeAlias = np.ndarray | Prefixed
Encoder: TypeAlias = Callable[[pa.Array], Fields]


def _with_length(values: np.ndarray) -> np.ndarray:
    """Fixed-width big-endian values (an (n,) array of a `>` dtype) as length-prefixed fields."""
    n = len(values)
    width = values.dtype.itemsize
    matrix = np.empty((n, 4 + width), dtype=np.uint8)
    matrix[:, :4] = np.frombuffer(struct.pack(">i", width), dtype=np.uint8)
    matrix[:, 4:] = values.view(np.uint8).reshape(n, width)
    return matrix


def _nulls_as_minus_one(column: pa.Array, fields: np.ndarray) -> Fields:
    """Fixed-width fields (an (n, 4 + w) matrix, lengths first) with the NULL values' fields
    made NULL fields (length -1, no data): then `Prefixed`, the valid values' bytes packed."""
    if column.null_count == 0:
        return fields
    n, width = len(fields), fields.shape[1] - 4
    valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
    lengths = np.where(valid, width, -1).astype(">i4").view(np.uint8).reshape(n, 4)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(valid * width, out=offsets[1:])
    data = np.ascontiguousarray(fields[valid, 4:]).reshape(-1)
    values = pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    return Prefixed(lengths, values)


def _fixed(arrow_type: pa.DataType, wire: str) -> Encoder:
    def encode(column: pa.Array) -> Fields:
        values = pc.cast(column, arrow_type).fill_null(0).to_numpy(zero_copy_only=False)
        return _nulls_as_minus_one(column, _with_length(values.astype(wire)))

    return encode


def _boolean(column: pa.Array) -> Fields:
    values = pc.cast(column, pa.bool_()).fill_null(False).to_numpy(zero_copy_only=False)
    return _nulls_as_minus_one(column, _with_length(values.astype(np.uint8).astype(">u1")))


def _date(column: pa.Array) -> Fields:
    days = pc.cast(pc.cast(column, pa.date32()), pa.int32()).fill_null(0).to_numpy()
    return _nulls_as_minus_one(column, _with_length((days - _PG_EPOCH_DAYS).astype(">i4")))


def _timestamp(with_zone: bool) -> Encoder:
    def encode(column: pa.Array) -> Fields:
        kind = column.type
        if not pa.types.is_timestamp(kind):
            raise TypeError(f"expected a timestamp, got {kind}")
        if with_zone and kind.tz is None:
            raise TypeError("TIMESTAMPTZ needs a time-zone-aware timestamp (UTC instants)")
        # the int64 of a zoned Arrow timestamp is already the UTC instant
        micros = pc.cast(pc.cast(column, pa.timestamp("us", kind.tz)), pa.int64())
        values = micros.fill_null(0).to_numpy() - _PG_EPOCH_MICROS
        return _nulls_as_minus_one(column, _with_length(values.astype(">i8")))

    return encode


def _text(column: pa.Array) -> Fields:
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = pc.cast(column, pa.string())
    data = pc.cast(column, pa.binary())
    lengths = pc.binary_length(data).fill_null(-1).to_numpy().astype(">i4")
    values = data.fill_null(b"") if data.null_count else data
    return Prefixed(lengths.view(np.uint8).reshape(len(lengths), 4), values)


def _numeric(precision: int, scale: int) -> Encoder:
    """NUMERIC(p,s) with a fixed digit count: ceil((p-s)/4) integer and ceil(s/4) fraction
    groups of base 10000 (leading and trailing zero groups are allowed; PostgreSQL strips them)."""
    int_groups = max(0, -(-(precision - scale) // 4))
    frac_groups = -(-scale // 4)
    ndigits = int_groups + frac_groups
    shift = 10 ** (4 * frac_groups - scale)
    fast = precision <= 18 and 4 * frac_groups <= 18  # every intermediate fits in int64
    width = 8 + 2 * ndigits

    def groups_of(magnitude: np.ndarray, count: int) -> list[np.ndarray]:
        out = []
        for _ in range(count):
            magnitude, digit = np.divmod(magnitude, 10_000)
            out.append(digit)
        return out[::-1]

    def encode(column: pa.Array) -> Fields:
        typed = pc.cast(column, pa.decimal128(max(precision, 1), scale))
        n = len(typed)
        fields = np.zeros((n, 4 + ndigits), dtype=">u2")  # ndigits weight sign dscale digits
        fields[:, 0] = ndigits
        fields[:, 1] = np.array(int_groups - 1, dtype=np.int16).view(np.uint16)
        fields[:, 3] = scale
        if fast:
            words = np.frombuffer(typed.buffers()[1], dtype=np.int64)
            unscaled = words[2 * typed.offset : 2 * (typed.offset + n) : 2].copy()
            if typed.null_count:
                unscaled[~pc.is_valid(typed).to_numpy(zero_copy_only=False)] = 0
            fields[:, 2] = np.where(unscaled < 0, _NUMERIC_NEG, _NUMERIC_POS)
            whole, fraction = np.divmod(np.abs(unscaled), 10**scale)
            groups = groups_of(whole, int_groups) + groups_of(fraction * shift, frac_groups)
            for i, group in enumerate(groups):
                fields[:, 4 + i] = group
        else:  # beyond int64: exact, one value at a time
            for row, value in enumerate(typed.to_pylist()):
                if not isinstance(value, Decimal):
                    continue
                unscaled_int = int(value.scaleb(scale, _EXACT))
                fields[row, 2] = _NUMERIC_NEG if unscaled_int < 0 else _NUMERIC_POS
                whole_int, fraction_int = divmod(abs(unscaled_int), 10**scale)
                digits = []
                for _ in range(int_groups):
                    whole_int, digit = divmod(whole_int, 10_000)
                    digits.append(digit)
                fraction_int *= shift
                tail = []
                for _ in range(frac_groups):
                    fraction_int, digit = divmod(fraction_int, 10_000)
                    tail.append(digit)
                fields[row, 4:] = digits[::-1] + tail[::-1]
        matrix = np.empty((n, 4 + width), dtype=np.uint8)
        matrix[:, :4] = np.frombuffer(struct.pack(">i", width), dtype=np.uint8)
        matrix[:, 4:] = fields.view(np.uint8).reshape(n, width)
        return _nulls_as_minus_one(typed, matrix)

    return encode


def encoder_for(column: str, warehouse_type: str) -> Encoder:
    """The encoder of one column of the given warehouse type."""
    kind = " ".join(warehouse_type.upper().split())
    if kind in _FIXED:
        return _fixed(*_FIXED[kind])
    if kind == "BOOLEAN":
        return _boolean
    if kind == "DATE":
        return _date
    if kind in ("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE"):
        return _timestamp(with_zone=True)
    if kind in ("TIMESTAMP", "TIMESTAMP WITHOUT TIME ZONE"):
        return _timestamp(with_zone=False)
    if _TEXT.match(kind):
        return _text
    if match := _NUMERIC.match(kind):
        return _numeric(int(match[1]), int(match[2]))
    raise UnsupportedType(
        f"{column}: no binary COPY encoding for warehouse type {warehouse_type!r}"
    )


def is_fixed_width(warehouse_type: str) -> bool:
    """Whether a non-NULL value of the type always takes the same number of bytes."""
    kind = " ".join(warehouse_type.upper().split())
    return not _TEXT.match(kind)


class BinaryCopyEncoder:
    """Encodes Arrow batches with the columns `(name, warehouse type)` as binary COPY tuples.

    `columns` is the order of the COPY column list; `copy_order` puts the fixed-width types
    first, which lets a batch without NULLs be assembled from one wide matrix. Send `HEADER`,
    then `encode(batch)` for every batch, then `TRAILER`.
    """

    def __init__(self, columns: list[tuple[str, str]]) -> None:
        self.names = [name for name, _ in columns]
        self.encoders = [encoder_for(name, kind) for name, kind in columns]
        self._count = np.frombuffer(struct.pack(">h", len(columns)), dtype=np.uint8)

    @staticmethod
    def copy_order(columns: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """`columns` with the fixed-width types first (otherwise in their order)."""
        return sorted(columns, key=lambda column: not is_fixed_width(column[1]))

    def encode(self, batch: pa.RecordBatch | pa.Table) -> memoryview:
        """The tuples of `batch` (its columns picked by name), ready to write to the COPY."""
        n = batch.num_rows
        if n == 0:
            return memoryview(b"")
        parts: list[pa.Array] = []
        run = [np.broadcast_to(self._count, (n, 2))]
        for name, encode in zip(self.names, self.encoders, strict=True):
            column = batch.column(name)
            if isinstance(column, pa.ChunkedArray):
                column = column.combine_chunks()
            fields = encode(column)
            if isinstance(fields, np.ndarray):
                run.append(fields)
                continue
            run.append(fields.lengths)
            parts.append(_pieces(np.hstack(run)))
            parts.append(fields.values)
            run = []
        if run:
            parts.append(_pieces(np.hstack(run)))
        rows = parts[0] if len(parts) == 1 else pc.binary_join_element_wise(*parts, b"")
        offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32)[
            rows.offset : rows.offset + n + 1
        ]
        data = rows.buffers()[2]
        assert data is not None
        return memoryview(data)[int(offsets[0]) : int(offsets[-1])]

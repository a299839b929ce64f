"""Per-subject encryption of personal columns (pure logic, no KMS)."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from lifecycle_pipelines.archive.crypto import (
    PERSONAL_COLUMN,
    UNATTRIBUTED,
    decode_row,
    decrypt_personal,
    encode_rows,
    encrypt_personal,
)

PERSONAL = ["name", "city"]


def _table() -> pa.Table:
    return pa.table(
        {
            "id": pa.array([1, 2, 3, 4], pa.int64()),
            "user_id": pa.array([10, 20, 10, None], pa.int64()),
            "name": pa.array(["Ana Łukasz", "", None, "Zoë"], pa.string()),
            "city": pa.array(["Cork", "Dublin\x1f\x00", "Paris", None], pa.string()),
            "total": pa.array([1, 2, 3, 4], pa.int64()),
        }
    )


def _keys() -> dict[str, bytes | None]:
    return {s: os.urandom(32) for s in ("10", "20", UNATTRIBUTED)}


def _encrypt(table: pa.Table, keys: dict[str, bytes | None]) -> pa.Table:
    return encrypt_personal(
        table,
        table_name="t",
        primary_key="id",
        subject_column="user_id",
        personal_columns=PERSONAL,
        keys=keys,
    )


def _decrypt(table: pa.Table, keys: dict[str, bytes | None]) -> pa.Table:
    return decrypt_personal(
        table,
        table_name="t",
        primary_key="id",
        subject_column="user_id",
        personal_fields=[pa.field(c, pa.string()) for c in PERSONAL],
        keys=keys,
    )


def test_encoding_keeps_nulls_empty_strings_and_any_character() -> None:
    encoded = encode_rows(_table(), PERSONAL)
    rows = [decode_row(value.as_py(), 2) for value in encoded]
    assert rows == [["Ana Łukasz", "Cork"], ["", "Dublin\x1f\x00"], [None, "Paris"], ["Zoë", None]]


def test_personal_columns_are_replaced_by_ciphertext_and_round_trip() -> None:
    keys = _keys()
    encrypted = _encrypt(_table(), keys)
    assert encrypted.column_names == ["id", "user_id", "total", PERSONAL_COLUMN]
    assert b"Cork" not in b"".join(encrypted.column(PERSONAL_COLUMN).to_pylist())
    decrypted = _decrypt(encrypted, keys)
    assert (
        decrypted.select(["id", *PERSONAL]).to_pylist()
        == _table().select(["id", *PERSONAL]).to_pylist()
    )


def test_a_destroyed_key_makes_only_that_subject_unreadable() -> None:
    keys = _keys()
    encrypted = _encrypt(_table(), keys)
    shredded = {**keys, "10": None}
    rows = _decrypt(encrypted, shredded).to_pylist()
    assert [r["name"] for r in rows] == [None, "", None, "Zoë"]
    assert [r["city"] for r in rows] == [None, "Dublin\x1f\x00", None, None]


def test_rows_of_a_subject_whose_key_is_gone_are_written_without_personal_data() -> None:
    keys = {**_keys(), "20": None}
    encrypted = _encrypt(_table(), keys)
    assert encrypted.column(PERSONAL_COLUMN).to_pylist()[1] is None


def test_a_ciphertext_moved_to_another_row_does_not_decrypt() -> None:
    keys = _keys()
    encrypted = _encrypt(_table(), keys)
    cells = encrypted.column(PERSONAL_COLUMN).to_pylist()
    swapped = encrypted.set_column(
        encrypted.schema.get_field_index(PERSONAL_COLUMN),
        PERSONAL_COLUMN,
        pa.array([cells[2], cells[1], cells[0], cells[3]], pa.binary()),
    )
    rows = _decrypt(swapped, keys).to_pylist()
    assert rows[0]["name"] is None and rows[2]["city"] is None
    assert rows[1]["name"] == ""


def test_missing_subject_key_is_an_error_not_a_clear_write() -> None:
    with pytest.raises(KeyError):
        _encrypt(_table(), {"10": os.urandom(32)})

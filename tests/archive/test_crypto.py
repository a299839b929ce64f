"""Per-subject encryption of personal columns (pure logic, no KMS)."""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from lifecycle_pipelines.archive import crypto
from lifecycle_pipelines.archive.crypto import (
    PERSONAL_COLUMN,
    UNATTRIBUTED,
    _text_array,
    decode_row,
    decrypt_personal,
    encode_rows,
    encrypt_personal,
    group_by_subject,
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


def test_rows_are_grouped_by_subject_with_nulls_unattributed() -> None:
    groups = group_by_subject(pa.chunked_array([[20, None, 10], [20, 0, None]], pa.int64()))
    assert groups.counts == {"0": 1, "10": 1, "20": 2, UNATTRIBUTED: 2}
    rows = {
        subject: sorted(groups.order[start:end].tolist())
        for subject, start, end in zip(groups.subjects, groups.starts, groups.ends, strict=True)
    }
    assert rows == {"0": [4], "10": [2], "20": [0, 3], UNATTRIBUTED: [1, 5]}
    text = group_by_subject(pa.array(["b", None, "a", "b"]))
    assert text.counts == {"a": 1, "b": 2, UNATTRIBUTED: 1}


def test_many_rows_in_slices_round_trip_and_keep_destroyed_subjects_empty(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(crypto, "ENCRYPT_SLICE_ROWS", 7)
    n = 200
    table = pa.table(
        {
            "id": pa.array(range(1000, 1000 + n), pa.int64()),
            "user_id": pa.array([i % 13 if i % 17 else None for i in range(n)], pa.int64()),
            "name": pa.array([f"name {i}" if i % 5 else None for i in range(n)]),
            "city": pa.array([f"city {i}" for i in range(n)]),
            "total": pa.array(range(n), pa.int64()),
        }
    )
    keys: dict[str, bytes | None] = {str(s): os.urandom(32) for s in range(13)}
    keys[UNATTRIBUTED] = os.urandom(32)
    keys["3"] = None
    encrypted = _encrypt(table, keys)
    cells = encrypted.column(PERSONAL_COLUMN).to_pylist()
    assert [c is None for c in cells] == [i % 17 != 0 and i % 13 == 3 for i in range(n)]
    assert len({c[:12] for c in cells if c}) == sum(1 for c in cells if c)  # fresh nonces
    decrypted = _decrypt(encrypted, keys).to_pylist()
    for i, row in enumerate(decrypted):
        erased = i % 17 != 0 and i % 13 == 3
        assert row["name"] == (None if erased or i % 5 == 0 else f"name {i}")
        assert row["city"] == (None if erased else f"city {i}")


def test_missing_keys_are_fetched_once_when_a_fetcher_is_given() -> None:
    asked: list[list[str]] = []

    def fetch(subjects: list[str]) -> dict[str, bytes | None]:
        asked.append(subjects)
        return {s: os.urandom(32) for s in subjects}

    encrypted = encrypt_personal(
        _table(),
        table_name="t",
        primary_key="id",
        subject_column="user_id",
        personal_columns=PERSONAL,
        keys={"10": os.urandom(32)},
        fetch_missing=fetch,
    )
    assert sorted(asked[0]) == ["20", UNATTRIBUTED] and len(asked) == 1
    assert encrypted.column(PERSONAL_COLUMN).null_count == 0


def test_text_array_literals_quote_what_needs_quoting() -> None:
    assert _text_array(["1", "22", "unattributed"]) == "{1,22,unattributed}"
    assert _text_array(["a b", 'q"uote', "back\\slash", "NULL", ""]) == (
        '{"a b","q\\"uote","back\\\\slash","NULL",""}'
    )

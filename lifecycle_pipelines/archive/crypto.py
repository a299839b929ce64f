"""Per-subject encryption of personal columns (erasure-ready archives).

Every data subject has one random 256-bit data key in the control schema (`subject_keys`),
wrapped with AES-GCM under a key-encryption key (KEK); the KEK itself is a KMS data key stored
only as KMS ciphertext, so every subject key is wrapped by the KMS key through one KMS call per
run rather than one per subject. Destroying a subject's wrapped key (crypto-shredding) makes
their personal columns unreadable in every archived copy, version and storage class at once.

In an archived Parquet object the policy's personal columns of a row are replaced by one binary
column `_personal`: a 12-byte nonce followed by the AES-256-GCM ciphertext of the row's personal
values (length-prefixed UTF-8, -1 for NULL), authenticated with the table name and the row's
primary key so a ciphertext cannot be moved to another row. Keys, money and timestamps stay clear.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)

PERSONAL_COLUMN = "_personal"
ENCRYPTION_SCHEME = "aes-256-gcm-subject-v1"
UNATTRIBUTED = "unattributed"  # subject id used for rows whose subject column is NULL
NONCE_BYTES = 12


class SubjectKeyring:
    """Subject data keys of the control schema, created on first use, unwrapped with the KEK.

    `control` must be in autocommit mode: each new key is durable before anything uses it.
    """

    def __init__(self, control: psycopg.Connection[Any], kms: Any, kms_key_id: str) -> None:
        self._control = control
        self._kms = kms
        self._kms_key_id = kms_key_id
        self._keks: dict[int, AESGCM] = {}

    def _current_kek(self) -> tuple[int, AESGCM]:
        row = self._control.execute(
            "SELECT kek_id FROM lifecycle.key_encryption_keys WHERE kms_key_id = %s"
            " ORDER BY kek_id DESC LIMIT 1",
            (self._kms_key_id,),
        ).fetchone()
        if row is None:
            generated = self._kms.generate_data_key(KeyId=self._kms_key_id, KeySpec="AES_256")
            row = self._control.execute(
                "INSERT INTO lifecycle.key_encryption_keys (kms_key_id, encrypted_kek)"
                " VALUES (%s, %s) RETURNING kek_id",
                (self._kms_key_id, generated["CiphertextBlob"]),
            ).fetchone()
            assert row is not None
            self._keks[row[0]] = AESGCM(generated["Plaintext"])
        return row[0], self._kek(row[0])

    def _kek(self, kek_id: int) -> AESGCM:
        if kek_id not in self._keks:
            row = self._control.execute(
                "SELECT encrypted_kek FROM lifecycle.key_encryption_keys WHERE kek_id = %s",
                (kek_id,),
            ).fetchone()
            if row is None:
                raise LookupError(f"key-encryption key {kek_id} is missing from the control schema")
            plaintext = self._kms.decrypt(CiphertextBlob=bytes(row[0]))["Plaintext"]
            self._keks[kek_id] = AESGCM(plaintext)
        return self._keks[kek_id]

    def keys(self, subject_ids: Sequence[str], *, create: bool) -> dict[str, bytes | None]:
        """The 32-byte data key of each subject; None for a destroyed key. Missing keys are
        created when `create` (concurrent creators agree: the first insert wins), else left out.

        Raw keys are returned rather than cipher objects: an AESGCM object holds ~2.4 KB of
        OpenSSL state, too much to keep for every subject of a month."""
        wanted = sorted(set(subject_ids))
        if create:
            kek_id, kek = self._current_kek()
            existing = {
                subject
                for (subject,) in self._control.execute(
                    "SELECT subject_id FROM lifecycle.subject_keys WHERE subject_id = ANY(%s)",
                    (wanted,),
                )
            }
            new = [s for s in wanted if s not in existing]
            if new:
                rows = []
                for subject in new:
                    nonce = os.urandom(NONCE_BYTES)
                    wrapped = nonce + kek.encrypt(nonce, os.urandom(32), subject.encode())
                    rows.append((subject, kek_id, wrapped))
                with self._control.transaction():
                    self._control.execute(
                        "CREATE TEMP TABLE new_subject_keys (subject_id text, kek_id bigint,"
                        " wrapped_key bytea) ON COMMIT DROP"
                    )
                    with self._control.cursor().copy(
                        "COPY new_subject_keys (subject_id, kek_id, wrapped_key)"
                        " FROM STDIN (FORMAT binary)"
                    ) as copy:
                        copy.set_types(["text", "int8", "bytea"])
                        for row in rows:
                            copy.write_row(row)
                    self._control.execute(
                        "INSERT INTO lifecycle.subject_keys (subject_id, kek_id, wrapped_key)"
                        " SELECT subject_id, kek_id, wrapped_key FROM new_subject_keys"
                        " ON CONFLICT (subject_id) DO NOTHING"
                    )
        result: dict[str, bytes | None] = {}
        for subject, kek_id, wrapped in self._control.execute(
            "SELECT subject_id, kek_id, wrapped_key FROM lifecycle.subject_keys"
            " WHERE subject_id = ANY(%s)",
            (wanted,),
        ):
            if wrapped is None:
                result[subject] = None
                continue
            blob = bytes(wrapped)
            result[subject] = self._kek(kek_id).decrypt(
                blob[:NONCE_BYTES], blob[NONCE_BYTES:], subject.encode()
            )
        return result

    def destroy(self, subject_id: str) -> bool:
        """Crypto-shred one subject's key; True if a live key was destroyed now.

        A subject without a key gets a tombstone instead, so that no later archive run creates
        one for them (their personal columns are then written as NULL)."""
        cur = self._control.execute(
            "UPDATE lifecycle.subject_keys SET wrapped_key = NULL, destroyed_at = now()"
            " WHERE subject_id = %s AND wrapped_key IS NOT NULL",
            (subject_id,),
        )
        if cur.rowcount == 1:
            return True
        self._control.execute(
            "INSERT INTO lifecycle.subject_keys (subject_id, kek_id, wrapped_key, destroyed_at)"
            " VALUES (%s, NULL, NULL, now()) ON CONFLICT (subject_id) DO NOTHING",
            (subject_id,),
        )
        return False


def subject_ids(column: pa.ChunkedArray | pa.Array) -> list[str]:
    """Subject ids as text (the key of `subject_keys`); NULL subjects map to UNATTRIBUTED."""
    as_text = pc.cast(column, pa.string()).fill_null(UNATTRIBUTED)
    return as_text.to_pylist()


def encode_rows(table: pa.Table, columns: Sequence[str]) -> pa.Array:
    """The length-prefixed encoding of `columns` for every row, built by Arrow (no row loop).

    Each value is a little-endian int32 length (-1 for NULL) followed by its UTF-8 text; the
    result is one binary value per row.
    """
    pieces: list[pa.Array] = []
    for name in columns:
        text = pc.cast(table.column(name), pa.string()).combine_chunks()
        lengths = pc.binary_length(text).fill_null(-1).to_numpy(zero_copy_only=False)
        header = np.ascontiguousarray(lengths.astype("<i4"))
        header_arr = pa.Array.from_buffers(
            pa.binary(4), len(header), [None, pa.py_buffer(header.view(np.uint8))]
        )
        pieces.append(header_arr.cast(pa.binary()))
        pieces.append(text.fill_null("").cast(pa.binary()))
    return pc.binary_join_element_wise(*pieces, b"")


def decode_row(plaintext: bytes, count: int) -> list[str | None]:
    """The `count` values of one encoded row."""
    values: list[str | None] = []
    pos = 0
    for _ in range(count):
        length = int.from_bytes(plaintext[pos : pos + 4], "little", signed=True)
        pos += 4
        if length < 0:
            values.append(None)
        else:
            values.append(plaintext[pos : pos + length].decode())
            pos += length
    return values


def _aad(table: str, pks: np.ndarray) -> tuple[bytes, bytes]:
    return table.encode() + b"\x00", pks.astype(">i8").tobytes()


def encrypt_personal(
    table: pa.Table,
    *,
    table_name: str,
    primary_key: str,
    subject_column: str,
    personal_columns: Sequence[str],
    keys: Mapping[str, bytes | None],
) -> pa.Table:
    """Replace `personal_columns` with the `_personal` ciphertext column.

    Rows of a subject whose key is destroyed get a NULL `_personal` (nothing readable is written).
    """
    n = table.num_rows
    encoded = encode_rows(table, personal_columns)
    offsets = np.frombuffer(encoded.buffers()[1], dtype=np.int32)[encoded.offset :].tolist()
    data = encoded.buffers()[2]
    subjects = subject_ids(table.column(subject_column))
    prefix, pk_bytes = _aad(table_name, table.column(primary_key).to_numpy())
    nonces = os.urandom(NONCE_BYTES * n)
    view = memoryview(data.to_pybytes() if data is not None else b"")
    cells: list[bytes | None] = [None] * n
    current: str | None = None
    cipher: AESGCM | None = None
    # Rows grouped by subject: one short-lived cipher object per subject and batch.
    for i in sorted(range(n), key=subjects.__getitem__):
        if subjects[i] != current:
            current = subjects[i]
            key = keys[current]
            cipher = None if key is None else AESGCM(key)
        if cipher is None:
            continue
        nonce = nonces[i * NONCE_BYTES : (i + 1) * NONCE_BYTES]
        aad = prefix + pk_bytes[i * 8 : i * 8 + 8]
        cells[i] = nonce + cipher.encrypt(nonce, view[offsets[i] : offsets[i + 1]], aad)
    kept = table.drop_columns(list(personal_columns))
    return kept.append_column(pa.field(PERSONAL_COLUMN, pa.binary()), pa.array(cells, pa.binary()))


def decrypt_personal(
    table: pa.Table,
    *,
    table_name: str,
    primary_key: str,
    subject_column: str,
    personal_fields: Sequence[pa.Field],
    keys: Mapping[str, bytes | None],
) -> pa.Table:
    """Restore the personal columns from `_personal`; NULL where the subject's key is gone."""
    n = table.num_rows
    subjects = subject_ids(table.column(subject_column))
    prefix, pk_bytes = _aad(table_name, table.column(primary_key).to_numpy())
    cells = table.column(PERSONAL_COLUMN).to_pylist()
    rows: list[list[str | None]] = [[None] * len(personal_fields) for _ in range(n)]
    undecryptable = 0
    current: str | None = None
    cipher: AESGCM | None = None
    for i in sorted(range(n), key=subjects.__getitem__):
        if subjects[i] != current:
            current = subjects[i]
            key = keys.get(current)
            cipher = None if key is None else AESGCM(key)
        cell = cells[i]
        if cipher is None or cell is None:
            continue
        try:
            plain = cipher.decrypt(
                cell[:NONCE_BYTES], cell[NONCE_BYTES:], prefix + pk_bytes[i * 8 : i * 8 + 8]
            )
        except InvalidTag:
            undecryptable += 1
            continue
        rows[i] = decode_row(plain, len(personal_fields))
    columns = (
        [list(values) for values in zip(*rows, strict=True)] if n else [[] for _ in personal_fields]
    )
    if undecryptable:
        log.warning("%s: %d rows failed authentication and read as NULL", table_name, undecryptable)
    result = table.drop_columns([PERSONAL_COLUMN])
    for field, values in zip(personal_fields, columns, strict=True):
        result = result.append_column(field, pc.cast(pa.array(values, pa.string()), field.type))
    return result

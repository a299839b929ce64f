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

import itertools
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
ENCRYPT_SLICE_ROWS = 32_768


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
        OpenSSL state, too much to keep for every subject of a month. The subject ids travel
        as one array literal each way (no per-subject statement or Python-side array dumping)."""
        wanted = sorted(set(subject_ids))
        if not wanted:
            return {}
        result = self._unwrapped(wanted)
        if create:
            missing = [s for s in wanted if s not in result]
            if missing:
                created = self._create(missing)
                result.update(created)
                lost = [s for s in missing if s not in created]  # another run created them
                if lost:
                    result.update(self._unwrapped(lost))
        return result

    def _unwrapped(self, subjects: list[str]) -> dict[str, bytes | None]:
        rows = self._control.execute(
            "SELECT subject_id, kek_id, wrapped_key FROM lifecycle.subject_keys"
            " WHERE subject_id = ANY(%s::text[])",
            (_text_array(subjects),),
            binary=True,
        ).fetchall()
        result: dict[str, bytes | None] = {}
        by_kek: dict[int, list[tuple[str, bytes]]] = {}
        for subject, kek_id, wrapped in rows:
            if wrapped is None:
                result[subject] = None
            else:
                by_kek.setdefault(kek_id, []).append((subject, wrapped))
        for kek_id, items in by_kek.items():
            subjects_of, blobs = zip(*items, strict=True)
            nonces = [blob[:NONCE_BYTES] for blob in blobs]
            sealed = [blob[NONCE_BYTES:] for blob in blobs]
            aads = [subject.encode() for subject in subjects_of]
            result.update(
                zip(subjects_of, map(self._kek(kek_id).decrypt, nonces, sealed, aads), strict=True)
            )
        return result

    def _create(self, subjects: list[str]) -> dict[str, bytes]:
        """Create keys for `subjects`; the ones this call inserted (others lost a race)."""
        kek_id, kek = self._current_kek()
        raw = os.urandom(32 * len(subjects))
        keys = [raw[i * 32 : (i + 1) * 32] for i in range(len(subjects))]
        nonce_bytes = os.urandom(NONCE_BYTES * len(subjects))
        nonces = [
            nonce_bytes[i * NONCE_BYTES : (i + 1) * NONCE_BYTES] for i in range(len(subjects))
        ]
        aads = [subject.encode() for subject in subjects]
        wrapped = [
            (nonce + sealed).hex()
            for nonce, sealed in zip(nonces, map(kek.encrypt, nonces, keys, aads), strict=True)
        ]
        inserted = self._control.execute(
            "INSERT INTO lifecycle.subject_keys (subject_id, kek_id, wrapped_key)"
            " SELECT s, %s, decode(w, 'hex') FROM unnest(%s::text[], %s::text[]) AS u(s, w)"
            " ON CONFLICT (subject_id) DO NOTHING RETURNING subject_id",
            (kek_id, _text_array(subjects), "{" + ",".join(wrapped) + "}"),
        ).fetchall()
        fresh = dict(zip(subjects, keys, strict=True))
        return {subject: fresh[subject] for (subject,) in inserted}

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


_PLAIN_LIST = re.compile(r"[A-Za-z0-9_.:@+-]+(?:,[A-Za-z0-9_.:@+-]+)*")
_NULL_ELEMENT = re.compile(r"(?:^|,)null(?:,|$)", re.IGNORECASE)


def _text_array(values: Sequence[str]) -> str:
    """A PostgreSQL text[] literal of `values` (quoted and escaped unless plainly safe)."""
    joined = ",".join(values)
    if _PLAIN_LIST.fullmatch(joined) and not _NULL_ELEMENT.search(joined):
        return "{" + joined + "}"
    quoted = (v.replace("\\", "\\\\").replace('"', '\\"') for v in values)
    return "{" + ",".join(f'"{v}"' for v in quoted) + "}"


def archived_schema(
    schema: pa.Schema, personal_columns: Sequence[str], subject_column: str | None
) -> pa.Schema:
    """The schema of an archived object of a table with `schema`: its personal columns replaced
    by the `_personal` ciphertext column at the end (as `encrypt_personal` writes it)."""
    if not personal_columns or not subject_column:
        return schema
    kept = [f for f in schema if f.name not in set(personal_columns)]
    return pa.schema([*kept, pa.field(PERSONAL_COLUMN, pa.binary())])


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


@dataclass(frozen=True)
class SubjectGroups:
    """The rows of a batch grouped by subject: `order` lists row indices subject by subject;
    group i is `order[starts[i]:ends[i]]` and belongs to `subjects[i]` (NULL: UNATTRIBUTED)."""

    order: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    subjects: list[str]

    @property
    def counts(self) -> dict[str, int]:
        """Rows per subject."""
        return dict(zip(self.subjects, (self.ends - self.starts).tolist(), strict=True))


def group_by_subject(column: pa.ChunkedArray | pa.Array) -> SubjectGroups:
    """Group rows by subject id (the text of the subject column) with one NumPy sort."""
    n = len(column)
    if pa.types.is_integer(column.type):
        values = np.asarray(pc.fill_null(column, 0).to_numpy(), dtype=np.int64)
        order = np.argsort(values, kind="stable")
        nulls = np.asarray(pc.is_null(column)) if column.null_count else None
        if nulls is not None:
            order = np.concatenate([order[~nulls[order]], np.flatnonzero(nulls)])
        ranked = values[order]
        change = ranked[1:] != ranked[:-1]
        if nulls is not None:
            change |= nulls[order][1:] != nulls[order][:-1]
        starts = np.flatnonzero(np.r_[True, change]) if n else np.zeros(0, dtype=np.int64)
        subjects = [str(v) for v in ranked[starts].tolist()]
        if nulls is not None and nulls.any():
            subjects[-1] = UNATTRIBUTED
    else:
        as_text = pc.cast(column, pa.string()).fill_null(UNATTRIBUTED)
        encoded = pc.dictionary_encode(as_text)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.unify_dictionaries().combine_chunks()
        codes = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
        order = np.argsort(codes, kind="stable")
        ranked = codes[order]
        starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]]) if n else codes[:0]
        dictionary = encoded.dictionary.to_pylist()
        subjects = [dictionary[c] for c in ranked[starts].tolist()]
    ends = np.r_[starts[1:], n].astype(np.int64)
    return SubjectGroups(order, starts.astype(np.int64), ends, subjects)


def _aads(table: str, pks: np.ndarray) -> list[bytes]:
    """The AAD of every row, table name + NUL + big-endian int64 key, built by NumPy."""
    prefix = np.frombuffer(table.encode() + b"\x00", dtype=np.uint8)
    width = prefix.size + 8
    buffer = np.empty((pks.size, width), dtype=np.uint8)
    buffer[:, : prefix.size] = prefix
    buffer[:, prefix.size :] = pks.astype(">i8").view(np.uint8).reshape(-1, 8)
    return buffer.view(f"V{width}").ravel().tolist()


def encrypt_personal(
    table: pa.Table,
    *,
    table_name: str,
    primary_key: str,
    subject_column: str,
    personal_columns: Sequence[str],
    keys: Mapping[str, bytes | None],
    fetch_missing: Callable[[list[str]], Mapping[str, bytes | None]] | None = None,
) -> pa.Table:
    """Replace `personal_columns` with the `_personal` ciphertext column.

    `keys` maps subject ids to their data keys; subjects missing from it are asked of
    `fetch_missing` in one call when given (else KeyError: nothing is ever written in clear).

    Every row gets its own random nonce and one AES-256-GCM encryption under its subject's key,
    authenticated with the table name and the row's key. Rows are grouped by subject with a
    NumPy sort, and each subject's rows go through the cipher in one `map` (no Python code per
    row); nonces, AADs and plaintexts are prepared as whole arrays.
    Rows of a subject whose key is destroyed get a NULL `_personal` (nothing readable is written).
    """
    n = table.num_rows
    kept = table.drop_columns(list(personal_columns))
    field = pa.field(PERSONAL_COLUMN, pa.binary())
    if n == 0:
        return kept.append_column(field, pa.array([], pa.binary()))
    groups = group_by_subject(table.column(subject_column))
    order = groups.order
    if fetch_missing is not None:
        missing = [s for s in groups.subjects if s not in keys]
        if missing:
            fetched = fetch_missing(missing)
            keys = {s: fetched[s] if s in fetched else keys[s] for s in groups.subjects}
    encoded = encode_rows(table, personal_columns)
    pks = np.asarray(table.column(primary_key).to_numpy(), dtype=np.int64)
    starts, ends = groups.starts.tolist(), groups.ends.tolist()
    # Rows go through the ciphers in slices of about ENCRYPT_SLICE_ROWS rows (whole subject
    # groups), so the per-row Python objects of a slice are all that exists at a time.
    cuts = np.searchsorted(groups.starts, np.arange(ENCRYPT_SLICE_ROWS, n, ENCRYPT_SLICE_ROWS))
    bounds = [0, *sorted(set(cuts.tolist()) - {0}), len(starts)]
    sealed_slices: list[pa.Array] = []
    for first, last in itertools.pairwise(bounds):
        if first == last:
            continue
        low, high = starts[first], ends[last - 1]
        rows = order[low:high]
        plaintexts = encoded.take(pa.array(rows)).to_pylist()
        aads = _aads(table_name, pks[rows])
        nonce_bytes = os.urandom(NONCE_BYTES * (high - low))
        nonces = np.frombuffer(nonce_bytes, dtype=f"V{NONCE_BYTES}").tolist()
        sealed: list[bytes | None] = []
        for group in range(first, last):
            start, end = starts[group] - low, ends[group] - low
            key = keys[groups.subjects[group]]
            if key is None:
                sealed.extend([None] * (end - start))
            else:
                cipher = AESGCM(key)
                sealed.extend(
                    map(cipher.encrypt, nonces[start:end], plaintexts[start:end], aads[start:end])
                )
        nonce_array = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(NONCE_BYTES), high - low, [None, pa.py_buffer(nonce_bytes)]
        ).cast(pa.binary())
        sealed_slices.append(
            pc.binary_join_element_wise(nonce_array, pa.array(sealed, pa.binary()), b"")
        )
    cells = pa.chunked_array(sealed_slices, pa.binary()).combine_chunks()
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    return kept.append_column(field, cells.take(pa.array(inverse)))


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

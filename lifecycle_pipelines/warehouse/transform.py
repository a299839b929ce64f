"""Row transforms of the hourly load on Arrow arrays (no Python work per row): pseudonymous
user keys, soft-deleted users' ids removed, date keys."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from lifecycle_pipelines.archive.stats import ReconStats, pk_hash
from lifecycle_pipelines.warehouse.model import (
    USER_KEY,
    USER_KEY_HEX_DIGITS,
    USER_KEY_WORD_DIGITS,
    WarehouseTable,
)

_HEX_VALUES = np.zeros(256, dtype=np.int64)
_HEX_VALUES[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_HEX_VALUES[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
_HEX_VALUES[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)


class UserKeys:
    """HMAC-SHA256 (hex) of user ids under one key, computed once per distinct id.

    The keyed state is prepared once and copied for each new id. The ids seen so far are a
    pandas Index (its hash table is built once per batch that brings new ids, not per batch)
    aligned with an Arrow array of their keys, so a batch is mapped with `get_indexer` (again
    after learning new ids) and one `take`, and only ids never seen before reach Python. NULL
    stays NULL.
    """

    def __init__(self, key: bytes) -> None:
        self._base = hmac.new(key, digestmod=hashlib.sha256)
        self._ids = pd.Index(np.empty(0, np.int64))
        self._keys: pa.Array = pa.array([], pa.string())

    def _new_keys(self, ids: list[int]) -> pa.Array:
        keys = []
        for user_id in ids:
            mac = self._base.copy()
            mac.update(str(user_id).encode())
            keys.append(mac.hexdigest())
        return pa.array(keys, pa.string())

    def __call__(self, user_ids: pa.ChunkedArray | pa.Array) -> pa.Array:
        ids = user_ids.combine_chunks() if isinstance(user_ids, pa.ChunkedArray) else user_ids
        ids = pc.cast(ids, pa.int64())
        valid = pc.is_valid(ids).to_numpy(zero_copy_only=False) if ids.null_count else None
        values = ids.fill_null(0).to_numpy()
        slots = self._ids.get_indexer(values)
        unknown = slots < 0 if valid is None else (slots < 0) & valid
        if unknown.any():
            new = pd.unique(values[unknown])
            self._keys = pa.concat_arrays([self._keys, self._new_keys(new.tolist())])
            self._ids = self._ids.append(pd.Index(new))
            slots = self._ids.get_indexer(values)
        return self._keys.take(pa.array(slots, pa.int64(), mask=None if valid is None else ~valid))


def user_keys(user_ids: pa.ChunkedArray | pa.Array, key: bytes) -> pa.Array:
    """HMAC-SHA256 (hex) of each user id; NULL stays NULL."""
    return UserKeys(key)(user_ids)


def user_key_numbers(keys: pa.Array) -> np.ndarray:
    """Each user key's figure as the warehouse computes it (`sql.key_figure`): the sum of the
    eight 32-bit numbers its groups of 8 hex digits spell, without a Python loop (the keys'
    bytes are read as one matrix)."""
    digits, width = USER_KEY_HEX_DIGITS, USER_KEY_WORD_DIGITS
    if keys.null_count:
        raise ValueError("user_key: a user key is NULL; every user has one")
    fixed = pc.cast(pc.cast(keys, pa.binary()), pa.binary(digits))  # fails unless 64 digits
    matrix = np.frombuffer(fixed.buffers()[1], dtype=np.uint8)
    matrix = matrix[fixed.offset * digits : (fixed.offset + len(fixed)) * digits]
    nibbles = _HEX_VALUES[matrix].reshape(-1, digits // width, width)
    shifts = np.arange(4 * (width - 1), -1, -4, dtype=np.int64)
    return (nibbles << shifts).sum(axis=(1, 2))


def user_key_figures(keys: pa.Array) -> ReconStats:
    """The reconciliation figures of a set of users by their keys: count, the sum of the key
    numbers (`user_key_numbers`) and of their h(k); no money."""
    numbers = user_key_numbers(keys)
    return ReconStats(
        rows=len(numbers),
        pk_sum=int(numbers.sum()),
        pk_hash_sum=int(pk_hash(numbers).sum()),
        money_cents={},
    )


def without_users(user_ids: pa.ChunkedArray | pa.Array, excluded: list[int] | pa.Array) -> pa.Array:
    """`user_ids` with every id in `excluded` replaced by NULL (vectorised)."""
    ids = user_ids.combine_chunks() if isinstance(user_ids, pa.ChunkedArray) else user_ids
    if not len(excluded):
        return ids
    mask = pc.is_in(ids, value_set=pa.array(excluded, ids.type))
    return pc.if_else(mask, pa.scalar(None, ids.type), ids)


def date_keys(times: pa.ChunkedArray | pa.Array) -> pa.Array:
    """YYYYMMDD of each timestamp (in its own time zone, UTC here) as int32. The calendar is
    worked out once per distinct day (an hour's rows span a few days), then mapped back."""
    if isinstance(times, pa.ChunkedArray):
        times = times.combine_chunks()
    local = pc.local_timestamp(times) if getattr(times.type, "tz", None) else times
    days = pc.cast(local, pa.date32())
    distinct = pc.unique(days)
    ymd = pc.add(
        pc.add(pc.multiply(pc.year(distinct), 10_000), pc.multiply(pc.month(distinct), 100)),
        pc.day(distinct),
    )
    return pc.take(pc.cast(ymd, pa.int32()), pc.index_in(days, value_set=distinct))


def is_user_dimension(table: WarehouseTable) -> bool:
    """Whether the table's rows are users (keyed by the user key): soft-deleted users are left
    out of it; other tables with a user key keep their rows with the key NULL."""
    return table.key == USER_KEY.name

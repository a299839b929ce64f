"""Row transforms of the hourly load on Arrow arrays (no Python work per row): pseudonymous
user keys, soft-deleted users' ids removed, date keys."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
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


DENSE_USER_IDS = 1 << 24  # ids in [0, this) are found through a table of positions (<= 64 MiB)


class UserKeys:
    """HMAC-SHA256 (hex) of user ids under one key, computed once per distinct id.

    The keyed state is prepared once and copied for each new id. The ids seen so far and their
    keys are kept as aligned Arrow arrays; while a batch's ids are all in [0, DENSE_USER_IDS)
    (shop ids are), a table of positions indexed by the id maps the batch in one vectorised
    lookup, else `index_in` hashes it. Only ids never seen before reach Python. NULL stays NULL.
    """

    def __init__(self, key: bytes) -> None:
        self._base = hmac.new(key, digestmod=hashlib.sha256)
        self._ids: pa.Array = pa.array([], pa.int64())
        self._keys: pa.Array = pa.array([], pa.string())
        self._slots = np.full(
            1, -1, np.int32
        )  # position in _keys of id i, -1 unknown (NULL reads 0)

    def _new_keys(self, ids: list[int]) -> pa.Array:
        keys = []
        for user_id in ids:
            mac = self._base.copy()
            mac.update(str(user_id).encode())
            keys.append(mac.hexdigest())
        return pa.array(keys, pa.string())

    def _remember(self, new: pa.Array) -> None:
        """Compute and keep the keys of ids never seen before (distinct, no NULL)."""
        start = len(self._ids)
        self._ids = pa.concat_arrays([self._ids, new])
        self._keys = pa.concat_arrays([self._keys, self._new_keys(new.to_pylist())])
        values = new.to_numpy()
        dense = (values >= 0) & (values < DENSE_USER_IDS)
        if not dense.any():
            return
        highest = int(values[dense].max())
        if highest >= len(self._slots):
            size = min(DENSE_USER_IDS, max(highest + 1, len(self._slots) * 5 // 4))
            grown = np.full(size, -1, np.int32)
            grown[: len(self._slots)] = self._slots
            self._slots = grown
        positions = np.arange(start, start + len(values), dtype=np.int32)
        self._slots[values[dense]] = positions[dense]

    def _positions(self, ids: pa.Array) -> pa.Array:
        """Each id's position in `_keys` (NULL for NULL), remembering new ids first."""
        values = ids.fill_null(0).to_numpy()
        if len(values) and values.min() >= 0 and values.max() < DENSE_USER_IDS:
            known = np.zeros(len(values), dtype=bool)
            inside = values < len(self._slots)
            known[inside] = self._slots[values[inside]] >= 0
            if ids.null_count:
                known |= ~pc.is_valid(ids).to_numpy(zero_copy_only=False)
            if not known.all():
                self._remember(pa.array(np.unique(values[~known])))
            nulls = pc.is_null(ids).to_numpy(zero_copy_only=False) if ids.null_count else None
            return pa.array(self._slots[values], pa.int32(), mask=nulls)
        distinct = pc.drop_null(pc.unique(ids))
        new = pc.filter(distinct, pc.invert(pc.is_in(distinct, value_set=self._ids)))
        if len(new):
            self._remember(new)
        return pc.index_in(ids, value_set=self._ids)

    def __call__(self, user_ids: pa.ChunkedArray | pa.Array) -> pa.Array:
        ids = user_ids.combine_chunks() if isinstance(user_ids, pa.ChunkedArray) else user_ids
        positions = self._positions(pc.cast(ids, pa.int64()))  # may add keys: first
        return pc.take(self._keys, positions)


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

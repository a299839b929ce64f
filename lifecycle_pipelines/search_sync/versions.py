"""Compact (id, version) sets for the primary-key-set comparison and the reconciliation.

A set holds two int64 NumPy arrays sorted by id: the product ids and a 40-bit hash of each
(id, updated_at) pair, about 16 bytes a document instead of a few hundred for Python dicts, so
comparing a million-document index with its source stays within tens of megabytes.

A version is reduced to an integer code first: a timestamp to its microseconds since the epoch
(whether it arrives as a datetime, as ISO-8601 text from a search engine or as a number from
PostgreSQL), anything else to a stable hash of its text. The pair hash is a SplitMix64 mix of
id and code computed on whole arrays, stable across processes, so checksums can be recorded
and compared later.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_TEXT_CODE = 1 << 62  # codes of versions that are not timestamps (no instant reaches 2^62 us)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def version_code(version: Any) -> int:
    """Microseconds since the epoch of a timestamp (a datetime, or ISO-8601 text; naive ones
    are UTC), else a 62-bit hash of the version's text with bit 62 set."""
    stamp = version
    if isinstance(version, str):
        try:
            stamp = datetime.fromisoformat(version)
        except ValueError:
            stamp = None
    if isinstance(stamp, datetime):
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        return (stamp - _EPOCH) // _MICROSECOND
    digest = hashlib.sha256(str(version).encode()).digest()[:8]
    return _TEXT_CODE | (int.from_bytes(digest, "big") >> 2)


def _mix(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on uint64 values (wrapping arithmetic)."""
    values = values ^ (values >> np.uint64(30))
    values = values * np.uint64(0xBF58476D1CE4E5B9)
    values = values ^ (values >> np.uint64(27))
    values = values * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def version_hashes(ids: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """40-bit hashes (int64) of (id, version code) pairs; sums of up to 2^23 of them fit in
    int64."""
    with np.errstate(over="ignore"):
        mixed = _mix(
            _mix(ids.astype(np.int64).view(np.uint64) + _GOLDEN)
            ^ codes.astype(np.int64).view(np.uint64)
        )
    return (mixed >> np.uint64(24)).astype(np.int64)


def version_hash(doc_id: str, version: Any) -> int:
    """The hash of one (id, version) pair (as `VersionSet` computes it for many)."""
    ids = np.asarray([int(doc_id)], dtype=np.int64)
    return int(version_hashes(ids, np.asarray([version_code(version)], dtype=np.int64))[0])


@dataclass(frozen=True)
class VersionSet:
    """Document ids (sorted) and their version hashes."""

    ids: np.ndarray
    hashes: np.ndarray

    @classmethod
    def from_arrays(cls, ids: np.ndarray, codes: np.ndarray) -> VersionSet:
        """From integer ids and version codes (`version_code`: microseconds for timestamps)."""
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        hashes = version_hashes(ids, np.asarray(codes, dtype=np.int64))
        return cls(ids[order], hashes[order])

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, Any]]) -> VersionSet:
        ids: list[int] = []
        codes: list[int] = []
        for doc_id, version in pairs:
            ids.append(int(doc_id))
            codes.append(version_code(version))
        return cls.from_arrays(np.asarray(ids, dtype=np.int64), np.asarray(codes, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def checksum(self) -> int:
        """Order-independent checksum: the sum of the version hashes."""
        return int(self.hashes.sum())

    def without(self, ids: Iterable[str]) -> VersionSet:
        drop = np.asarray([int(i) for i in ids], dtype=np.int64)
        keep = ~np.isin(self.ids, drop)
        return VersionSet(self.ids[keep], self.hashes[keep])

    def missing_from(self, other: VersionSet) -> list[str]:
        """Ids of this set that `other` lacks."""
        return [str(i) for i in np.setdiff1d(self.ids, other.ids, assume_unique=True)]

    def stale_in(self, other: VersionSet) -> list[str]:
        """Ids in both sets whose versions differ."""
        common, mine, theirs = np.intersect1d(
            self.ids, other.ids, assume_unique=True, return_indices=True
        )
        return [str(i) for i in common[self.hashes[mine] != other.hashes[theirs]]]

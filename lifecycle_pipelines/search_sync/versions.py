"""Compact (id, version) sets for the primary-key-set comparison and the reconciliation.

A set holds two int64 NumPy arrays sorted by id: the product ids and a 40-bit hash of each
(id, updated_at) pair, about 16 bytes a document instead of a few hundred for Python dicts, so
comparing a million-document index with its source stays within tens of megabytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np


def version_hash(doc_id: str, version: Any) -> int:
    """A 40-bit hash of one (id, updated_at) pair; sums of up to 2^23 of them fit in int64.

    Stable across processes (SHA-256 based), so checksums can be recorded and compared later.
    """
    return int.from_bytes(hashlib.sha256(f"{doc_id}|{version}".encode()).digest()[:5], "big")


@dataclass(frozen=True)
class VersionSet:
    """Document ids (sorted) and their version hashes."""

    ids: np.ndarray
    hashes: np.ndarray

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, Any]]) -> VersionSet:
        ids: list[int] = []
        hashes: list[int] = []
        for doc_id, version in pairs:
            ids.append(int(doc_id))
            hashes.append(version_hash(str(doc_id), version))
        id_array = np.asarray(ids, dtype=np.int64)
        order = np.argsort(id_array, kind="stable")
        return cls(id_array[order], np.asarray(hashes, dtype=np.int64)[order])

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

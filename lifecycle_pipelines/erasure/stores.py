"""The erasure interface every store's eraser implements.

An eraser lives with its store's code (the archive's in `archive/eraser.py`, the search index's
in `search_sync/eraser.py`, the warehouse's in `warehouse/eraser.py`, the shop's PostgreSQL and
DynamoDB here in `erasure/shop.py`). The hard delete runs each in turn, the verification check
asks each what remains, and the ledger replay runs them again after a restore.

Erasers report counts only: never a value of the subject's data. Every eraser is idempotent:
running it again finds nothing more and changes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Subject:
    """One data subject: the shop's user id and its pseudonym.

    `user_key` is the HMAC-SHA256 of the user id under the platform's pseudonym secret: the key
    of dim_users in the warehouse and the subject's name in erasure certificates.
    """

    subject_id: str
    user_key: str

    @classmethod
    def from_user_id(cls, subject_id: str, pseudonym_key: bytes) -> Subject:
        """The subject with its pseudonym computed under `pseudonym_key`."""
        return cls(subject_id, pseudonym(subject_id, pseudonym_key))


def pseudonym(subject_id: str, pseudonym_key: bytes) -> str:
    """HMAC-SHA256 (hex) of a subject id: the same function the warehouse load applies."""
    return hmac.new(pseudonym_key, subject_id.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class StoreResult:
    """What one location of a store held for the subject and what was removed or masked.

    `store` names the location (`postgres.orders`, `search.users-activity-2026-10`,
    `archive.objects`); `found` counts items before, `changed` what this run removed or masked.
    """

    store: str
    found: int
    changed: int
    note: str = ""


@dataclass(frozen=True)
class Remaining:
    """Personal data of the subject still present in one location after erasure (0 is clean)."""

    store: str
    count: int
    note: str = ""


def results_table(results: list[StoreResult]) -> str:
    """A markdown table of store results (counts only), for asset metadata."""
    lines = ["| store | found | changed | note |", "|---|---:|---:|---|"]
    lines += [f"| {r.store} | {r.found} | {r.changed} | {r.note} |" for r in results]
    return "\n".join(lines)


class Eraser(Protocol):
    """Erases one data subject from one store."""

    name: str

    def erase(self, subject: Subject, *, dry_run: bool) -> list[StoreResult]:
        """Remove or anonymise the subject's data; a dry run only counts what it would change."""
        ...

    def remaining(self, subject: Subject) -> list[Remaining]:
        """What personal data of the subject the store still holds, per location."""
        ...

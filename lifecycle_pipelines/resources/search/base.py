"""The search sink interface: what the sync needs from a search engine, and nothing more.

Engine quirks stay inside each engine's class (OpenSearch over HTTP, tantivy embedded).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class BulkItemError:
    """One document the engine refused in a bulk request."""

    doc_id: str
    status: int
    reason: str


@dataclass
class BulkResult:
    """Outcome of a bulk call: counts and every per-document error."""

    indexed: int = 0
    deleted: int = 0
    errors: list[BulkItemError] = field(default_factory=list)


@dataclass(frozen=True)
class SearchHit:
    """A search hit: document id, score and stored source."""

    doc_id: str
    score: float
    source: Mapping[str, Any]


class IndexNotFound(LookupError):
    """The named index or alias does not exist."""


class SearchOperationError(RuntimeError):
    """The engine accepted a request but reported that part of it failed (e.g. shard or
    document failures of a delete-by-query); the message carries reasons, never documents."""


_VALID_PATTERN = re.compile(r"^[a-z0-9*][a-z0-9._*-]*$")


def index_pattern(pattern: str) -> re.Pattern[str]:
    """The regular expression of an index name pattern where `*` matches any run of characters
    (OpenSearch's wildcard); ValueError names a pattern no index name could match."""
    if not _VALID_PATTERN.match(pattern):
        raise ValueError(
            f"pattern: {pattern!r} is not an index name pattern "
            "(lower-case letters, digits, '.', '_', '-' and the wildcard '*')"
        )
    return re.compile("^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$")


class SearchBackend(Protocol):
    """Operations every search engine backend provides."""

    def ping(self) -> bool:
        """True when the engine answers."""
        ...

    def index_exists(self, index: str) -> bool:
        """True when `index` exists."""
        ...

    def create_index(self, index: str, body: Mapping[str, Any]) -> None:
        """Create `index` with OpenSearch-style `settings` and `mappings` in `body`."""
        ...

    def delete_index(self, index: str) -> None:
        """Delete `index`; a no-op if it does not exist."""
        ...

    def alias_targets(self, alias: str) -> list[str]:
        """The indices an alias points at (empty when the alias does not exist)."""
        ...

    def swap_alias(self, alias: str, new_index: str) -> None:
        """Point `alias` at `new_index` alone, atomically."""
        ...

    def bulk_upsert(self, index: str, docs: Iterable[tuple[str, Mapping[str, Any]]]) -> BulkResult:
        """Index (create or replace) documents given as (id, source) pairs."""
        ...

    def bulk_delete(self, index: str, doc_ids: Sequence[str]) -> BulkResult:
        """Delete documents by id; missing ids are not errors."""
        ...

    def refresh(self, index: str) -> None:
        """Make recent writes visible to search and count."""
        ...

    def count(self, index: str) -> int:
        """Number of documents in an index or alias."""
        ...

    def search(
        self, index: str, query: str, fields: Sequence[str], size: int = 10
    ) -> list[SearchHit]:
        """Full-text search for `query` over `fields`, best first."""
        ...

    def put_index_template(self, name: str, body: Mapping[str, Any]) -> None:
        """Create or replace a composable index template."""
        ...

    def put_lifecycle_policy(self, policy_id: str, body: Mapping[str, Any]) -> None:
        """Create or update an index-state-management policy."""
        ...

    def scan_field(self, index: str, field: str) -> Iterator[tuple[str, Any]]:
        """(doc id, value of field) of every document of an index, streamed."""
        ...

    def list_indices(self, pattern: str) -> list[str]:
        """Concrete index names matching `pattern` (`*` is the only wildcard), sorted; empty
        when none match. Aliases are never returned, only the indices themselves."""
        ...

    def count_term(self, index: str, field: str, value: str) -> int:
        """Number of documents of `index` whose keyword `field` equals `value` exactly."""
        ...

    def delete_by_term(self, index: str, field: str, value: str) -> int:
        """Delete every document of `index` whose keyword `field` equals `value`; returns how
        many were deleted. The deletion is visible to count and search when this returns."""
        ...

"""Erasure in search: a data subject's documents removed from every index that holds them.

Subject data lives in monthly indices (`users-activity-YYYY-MM`, one per month of retention), so
the eraser expands each index pattern to every concrete index, not only the current month's, and
deletes by an exact term on the subject field. Indices known to hold no subject data (the product
catalogue) can be listed as checked, so the erasure report shows they were considered.

Only index names and counts are logged or returned, never a document or the subject's id.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from lifecycle_pipelines.erasure.stores import Remaining, StoreResult, Subject
from lifecycle_pipelines.resources.search.base import IndexNotFound, SearchBackend

log = logging.getLogger(__name__)

NO_INDEX_NOTE = "no index matches the pattern"
NO_SUBJECT_DATA_NOTE = "holds no subject data"
GONE_NOTE = "index deleted while erasing"


class SearchEraser:
    """Erases a data subject from the search engine (the `Eraser` protocol).

    `subject_indices` are (index pattern, subject keyword field) pairs, typically
    `load_policy().subject_search_indices()`; `checked_patterns` name indices without subject
    data, reported per index with nothing found.
    """

    name = "search"

    def __init__(
        self,
        backend: SearchBackend,
        subject_indices: Sequence[tuple[str, str]],
        checked_patterns: Sequence[str] = (),
    ) -> None:
        self.backend = backend
        self.subject_indices = list(subject_indices)
        self.checked_patterns = list(checked_patterns)
        for pattern, field in self.subject_indices:
            if not pattern or not field:
                raise ValueError(
                    f"subject_indices: ({pattern!r}, {field!r}) needs an index pattern and a "
                    "subject field"
                )

    def _locations(self) -> list[tuple[str, str, list[str]]]:
        """(pattern, subject field, matching indices) of every subject pattern."""
        return [
            (pattern, field, self.backend.list_indices(pattern))
            for pattern, field in self.subject_indices
        ]

    def erase(self, subject: Subject, *, dry_run: bool) -> list[StoreResult]:
        """Count the subject's documents in every matching index and, unless a dry run, delete
        them (refreshed, so `remaining` sees the result at once). Idempotent."""
        results: list[StoreResult] = []
        for pattern, field, indices in self._locations():
            if not indices:
                results.append(StoreResult(f"search.{pattern}", 0, 0, NO_INDEX_NOTE))
                log.info("search erasure: no index matches %s", pattern)
                continue
            for index in indices:
                try:
                    found = self.backend.count_term(index, field, subject.subject_id)
                    changed = 0
                    if found and not dry_run:
                        changed = self.backend.delete_by_term(index, field, subject.subject_id)
                except IndexNotFound:  # dropped by rotation or retention meanwhile: nothing held
                    results.append(StoreResult(f"search.{index}", 0, 0, GONE_NOTE))
                    continue
                results.append(StoreResult(f"search.{index}", found, changed))
                log.info(
                    "search erasure%s: %s found %d, deleted %d",
                    " (dry run)" if dry_run else "",
                    index,
                    found,
                    changed,
                )
        results.extend(
            StoreResult(f"search.{index}", 0, 0, NO_SUBJECT_DATA_NOTE) for index in self._checked()
        )
        return results

    def remaining(self, subject: Subject) -> list[Remaining]:
        """Documents of the subject per matching index (all 0 once erased)."""
        remaining: list[Remaining] = []
        for pattern, field, indices in self._locations():
            if not indices:
                remaining.append(Remaining(f"search.{pattern}", 0, NO_INDEX_NOTE))
                continue
            for index in indices:
                try:
                    count = self.backend.count_term(index, field, subject.subject_id)
                except IndexNotFound:
                    remaining.append(Remaining(f"search.{index}", 0, GONE_NOTE))
                    continue
                remaining.append(Remaining(f"search.{index}", count))
                if count:
                    log.warning("search erasure: %s still holds %d documents", index, count)
        remaining.extend(
            Remaining(f"search.{index}", 0, NO_SUBJECT_DATA_NOTE) for index in self._checked()
        )
        return remaining

    def _checked(self) -> list[str]:
        """Indices that hold no subject data (a pattern with no index stands for itself)."""
        return [
            index
            for pattern in self.checked_patterns
            for index in (self.backend.list_indices(pattern) or [pattern])
        ]

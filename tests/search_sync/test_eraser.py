"""Search erasure on the tantivy backend: every monthly activity index, idempotent, dry run."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lifecycle_pipelines.erasure.stores import Eraser, Remaining, StoreResult, Subject
from lifecycle_pipelines.policy import load_policy
from lifecycle_pipelines.resources.search.tantivy_backend import TantivyBackend
from lifecycle_pipelines.search_sync.activity import (
    ACTIVITY_INDEX_PATTERN,
    ACTIVITY_SUBJECT_FIELD,
    activity_index_body,
)
from lifecycle_pipelines.search_sync.eraser import (
    GONE_NOTE,
    NO_INDEX_NOTE,
    NO_SUBJECT_DATA_NOTE,
    SearchEraser,
)

MONTHS = ("users-activity-2026-09", "users-activity-2026-10")
ERASED = Subject("1001", "k" * 64)
KEPT = Subject("1002", "j" * 64)


def _event(event_id: int, user_id: str) -> tuple[str, dict[str, object]]:
    return str(event_id), {
        "event_id": str(event_id),
        "user_id": user_id,
        "session_id": f"s-{user_id}",
        "event_type": "page_view",
        "product_id": 7,
        "ip_address": "192.0.2.10",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64)",
        "occurred_at": "2026-10-01T12:00:00.000000Z",
    }


@pytest.fixture
def backend(tmp_path: Path) -> TantivyBackend:
    """Two monthly activity indices, each with 3 events of ERASED and 2 of KEPT."""
    engine = TantivyBackend(tmp_path / "search")
    for month_no, index in enumerate(MONTHS):
        engine.create_index(index, activity_index_body())
        base = month_no * 100
        docs = [_event(base + i, ERASED.subject_id) for i in range(3)]
        docs += [_event(base + 10 + i, KEPT.subject_id) for i in range(2)]
        assert not engine.bulk_upsert(index, docs).errors
    engine.swap_alias("users-activity", MONTHS[-1])
    return engine


def _eraser(backend: TantivyBackend) -> SearchEraser:
    return SearchEraser(backend, [(ACTIVITY_INDEX_PATTERN, ACTIVITY_SUBJECT_FIELD)])


def test_policy_names_the_activity_indices() -> None:
    assert (ACTIVITY_INDEX_PATTERN, ACTIVITY_SUBJECT_FIELD) in (
        load_policy().subject_search_indices()
    )


def test_erase_removes_the_subject_from_every_monthly_index(
    backend: TantivyBackend, caplog: pytest.LogCaptureFixture
) -> None:
    eraser: Eraser = _eraser(backend)
    assert eraser.name == "search"
    with caplog.at_level(logging.INFO):
        results = eraser.erase(ERASED, dry_run=False)
    assert results == [StoreResult(f"search.{index}", 3, 3) for index in MONTHS]
    for index in MONTHS:
        assert backend.count_term(index, "user_id", ERASED.subject_id) == 0
        assert backend.count_term(index, "user_id", KEPT.subject_id) == 2
        assert backend.count(index) == 2
    assert eraser.remaining(ERASED) == [Remaining(f"search.{index}", 0) for index in MONTHS]
    assert eraser.remaining(KEPT) == [Remaining(f"search.{index}", 2) for index in MONTHS]
    # index names and counts only: no subject id, no document value
    assert ERASED.subject_id not in caplog.text and "192.0.2.10" not in caplog.text
    assert "users-activity-2026-09" in caplog.text

    again = eraser.erase(ERASED, dry_run=False)
    assert again == [StoreResult(f"search.{index}", 0, 0) for index in MONTHS]


def test_dry_run_counts_and_changes_nothing(backend: TantivyBackend) -> None:
    eraser = _eraser(backend)
    assert eraser.erase(ERASED, dry_run=True) == [
        StoreResult(f"search.{index}", 3, 0) for index in MONTHS
    ]
    assert eraser.remaining(ERASED) == [Remaining(f"search.{index}", 3) for index in MONTHS]
    assert all(backend.count(index) == 5 for index in MONTHS)


def test_patterns_without_indices_and_checked_indices(backend: TantivyBackend) -> None:
    backend.create_index("catalog-products-2026-11", {"mappings": {"properties": {}}})
    eraser = SearchEraser(
        backend,
        [("orders-events-*", "user_id")],
        checked_patterns=["catalog-products-*", "reviews-*"],
    )
    assert eraser.erase(ERASED, dry_run=False) == [
        StoreResult("search.orders-events-*", 0, 0, NO_INDEX_NOTE),
        StoreResult("search.catalog-products-2026-11", 0, 0, NO_SUBJECT_DATA_NOTE),
        StoreResult("search.reviews-*", 0, 0, NO_SUBJECT_DATA_NOTE),
    ]
    assert eraser.remaining(ERASED)[0] == Remaining("search.orders-events-*", 0, NO_INDEX_NOTE)
    with pytest.raises(ValueError, match="subject_indices"):
        SearchEraser(backend, [("users-activity-*", "")])


def test_a_wrong_subject_field_fails_loudly(backend: TantivyBackend) -> None:
    """A misconfigured field must not report a clean erasure."""
    eraser = SearchEraser(backend, [(ACTIVITY_INDEX_PATTERN, "customer_id")])
    with pytest.raises(ValueError, match="keyword field"):
        eraser.erase(ERASED, dry_run=True)


def test_an_index_dropped_while_erasing_holds_nothing(backend: TantivyBackend) -> None:
    class Dropping(TantivyBackend):
        def count_term(self, index: str, field: str, value: str) -> int:
            if index == MONTHS[0]:
                self.delete_index(index)
            return super().count_term(index, field, value)

    eraser = _eraser(Dropping(backend.root))
    assert eraser.erase(ERASED, dry_run=False) == [
        StoreResult(f"search.{MONTHS[0]}", 0, 0, GONE_NOTE),
        StoreResult(f"search.{MONTHS[1]}", 3, 3),
    ]

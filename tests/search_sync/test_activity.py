"""User activity indexed from the seeded shop into monthly indices, then erased from them."""

from __future__ import annotations

from datetime import date
from typing import Any

import psycopg
import pytest

from lifecycle_pipelines.erasure.stores import Subject
from lifecycle_pipelines.policy import load_policy
from lifecycle_pipelines.resources.search.tantivy_backend import TantivyBackend
from lifecycle_pipelines.search_sync import activity
from lifecycle_pipelines.search_sync.activity import (
    activity_index_body,
    activity_index_name,
    index_activity_month,
)
from lifecycle_pipelines.search_sync.eraser import SearchEraser


def _busiest_months(shop_conn: psycopg.Connection[Any]) -> list[tuple[date, int]]:
    return [
        (month.date(), count)
        for month, count in shop_conn.execute(
            """
            SELECT date_trunc('month', occurred_at AT TIME ZONE 'UTC'), count(*)
            FROM user_activity GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 2
            """
        ).fetchall()
    ]


def test_body_stays_within_the_local_engine() -> None:
    properties = activity_index_body()["mappings"]["properties"]
    assert {spec["type"] for spec in properties.values()} == {"keyword", "long", "text", "date"}
    assert activity_index_name(date(2026, 12, 31)) == "users-activity-2026-12"


def test_index_months_then_erase_a_user_everywhere(
    shop_conn: psycopg.Connection[Any], engine: TantivyBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    months = _busiest_months(shop_conn)
    assert len(months) == 2 and months[1][1] > 7
    monkeypatch.setattr(activity, "BATCH_SIZE", 7)  # several batches per month
    for month, expected in months:
        assert index_activity_month(shop_conn, engine, month) == expected
        assert engine.count(activity_index_name(month)) == expected
    # a re-run replaces, never duplicates
    first_month, first_count = months[0]
    assert index_activity_month(shop_conn, engine, first_month.replace(day=15)) == first_count
    assert engine.count(activity_index_name(first_month)) == first_count

    row = shop_conn.execute(
        """
        SELECT user_id::text FROM user_activity
        WHERE user_id IS NOT NULL
          AND occurred_at >= %(start)s::timestamp AT TIME ZONE 'UTC'
          AND occurred_at < (%(start)s::timestamp + interval '1 month') AT TIME ZONE 'UTC'
        GROUP BY user_id ORDER BY count(*) DESC, user_id LIMIT 1
        """,
        {"start": first_month},
    ).fetchone()
    assert row is not None
    subject = Subject(row[0], "x" * 64)
    index = activity_index_name(first_month)
    hit = engine.search(index, "mozilla", ["user_agent"], size=1)
    assert hit and set(hit[0].source) <= set(activity_index_body()["mappings"]["properties"])
    before = engine.count_term(index, "user_id", subject.subject_id)
    assert before > 0

    eraser = SearchEraser(engine, load_policy().subject_search_indices())
    results = {r.store: r for r in eraser.erase(subject, dry_run=False)}
    assert results[f"search.{index}"].changed == before
    assert all(r.count == 0 for r in eraser.remaining(subject))
    assert engine.count(index) == first_count - before

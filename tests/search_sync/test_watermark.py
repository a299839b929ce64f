"""The commit-safe high-water mark and what the database role may see."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from lifecycle_pipelines.search_sync.documents import (
    UNSEEN_TRANSACTIONS_LAG,
    commit_safe_high_water,
)

ROLE = "watermark_blind"


@pytest.fixture
def blind_role(local_stack: Any) -> Iterator[str]:
    """A login role of its own, without pg_read_all_stats, on the shop database."""
    stack = local_stack[0]
    admin = stack.postgres.start().conninfo()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ROLE)))
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'blind-pw'").format(sql.Identifier(ROLE))
        )
    yield psycopg.conninfo.make_conninfo(stack.app_conninfo(), user=ROLE, password="blind-pw")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(ROLE)))


def test_the_pipeline_role_sees_another_roles_open_transaction(
    local_stack: Any, blind_role: str
) -> None:
    with (
        psycopg.connect(local_stack[0].app_conninfo(), autocommit=True) as pipeline,
        psycopg.connect(blind_role) as writer,
    ):
        started = writer.execute("SELECT now()").fetchone()
        assert started is not None  # the writer's transaction is open from here
        mark = commit_safe_high_water(pipeline, timedelta(0))
        assert mark <= started[0]


def test_a_role_that_cannot_see_other_transactions_waits_the_longer_lag(
    local_stack: Any, blind_role: str, caplog: pytest.LogCaptureFixture
) -> None:
    with psycopg.connect(blind_role, autocommit=True) as blind:
        now = blind.execute("SELECT now()").fetchone()
        assert now is not None
        mark = commit_safe_high_water(blind, timedelta(seconds=5))
    lag = now[0] - mark  # measured from the next statement's now(), a moment later
    assert UNSEEN_TRANSACTIONS_LAG - timedelta(seconds=1) <= lag < UNSEEN_TRANSACTIONS_LAG * 2
    assert "pg_read_all_stats" in caplog.text

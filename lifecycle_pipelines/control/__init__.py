"""The pipelines' own control database: archive manifest, subject keys, subject index, restore
tests (and, later, the erasure ledger). Its schema is a set of forward-only migrations applied by
`ensure_control_schema`, which every asset that uses it calls first (cheap when up to date)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from lifecycle_pipelines.migrations import apply_migrations

CONTROL_SCHEMA = "lifecycle"
MIGRATIONS = Path(__file__).with_name("migrations")


def ensure_control_schema(conn: psycopg.Connection[Any]) -> list[str]:
    """Apply pending control-schema migrations; returns the names applied now."""
    return apply_migrations(conn, MIGRATIONS, schema=CONTROL_SCHEMA)


def try_session_lock(conn: psycopg.Connection[Any], name: str) -> bool:
    """Take the session-level advisory lock `name` if it is free (never waits); True if taken.
    It goes with the connection, or with `release_session_lock`."""
    row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (name,)).fetchone()
    return bool(row and row[0])


def release_session_lock(conn: psycopg.Connection[Any], name: str) -> None:
    """Release a lock `try_session_lock` took on this connection."""
    conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (name,))

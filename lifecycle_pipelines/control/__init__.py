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

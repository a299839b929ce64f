"""A small forward-only SQL migration runner: ordered `NNN_name.sql` files, each applied once in
its own transaction and recorded in `<schema>.schema_migrations`."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)


def migration_files(folder: Path) -> list[Path]:
    """The `*.sql` files of `folder` in the order they apply."""
    return sorted(folder.glob("[0-9][0-9][0-9]_*.sql"))


def apply_migrations(
    conn: psycopg.Connection[Any], folder: Path, *, schema: str = "public"
) -> list[str]:
    """Apply the files of `folder` not yet recorded; returns the names applied now.

    A file that changed after it was applied is an error (its checksum no longer matches).
    """
    table = sql.Identifier(schema, "schema_migrations")
    with conn.transaction():
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, sha256 text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(table)
        )
        conn.execute(sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(table))
        applied = dict(
            conn.execute(sql.SQL("SELECT name, sha256 FROM {}").format(table)).fetchall()
        )
    done: list[str] = []
    for path in migration_files(folder):
        text = path.read_text()
        digest = hashlib.sha256(text.encode()).hexdigest()
        if path.name in applied:
            if applied[path.name] != digest:
                raise RuntimeError(
                    f"migration {path.name}: changed after it was applied; add a new file instead"
                )
            continue
        with conn.transaction():
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
            conn.execute(text.encode())
            conn.execute(
                sql.SQL("INSERT INTO {} (name, sha256) VALUES (%s, %s)").format(table),
                (path.name, digest),
            )
        log.info("applied migration %s", path.name)
        done.append(path.name)
    return done

"""The shop's own stores: hard delete in PostgreSQL (the cascade strategy) and DynamoDB.

PostgreSQL, in one transaction (spec 8.3, cascade strategy):
- `user_activity`: the subject's events are deleted;
- `orders`: kept for their seven-year retention, with the shipping name, address and phone set
  to NULL and the user reference removed (`user_id` NULL): money, items and dates stay for
  bookkeeping, nothing links them to the person;
- `addresses`: deleted; `users`: the row is deleted.
DynamoDB: the subject's Sessions (through `userId-index`) and UserPreferences are deleted (the
soft delete already did; a repeat finds what a client wrote since).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from lifecycle_pipelines.erasure.soft_delete import soft_delete_dynamodb
from lifecycle_pipelines.erasure.stores import Remaining, StoreResult, Subject

_ORDERS_NOTE = "kept for retention; personal fields and user reference removed"


class PostgresEraser:
    """Hard delete of a subject in the shop's PostgreSQL database (see the module docstring)."""

    name = "postgres"

    def __init__(self, shop: psycopg.Connection[Any]) -> None:
        self.shop = shop

    def erase(self, subject: Subject, *, dry_run: bool) -> list[StoreResult]:
        """Delete or anonymise every row of the subject; a dry run rolls everything back."""
        user = int(subject.subject_id)
        results = []
        with self.shop.transaction(force_rollback=dry_run):
            for store, statement in (
                ("postgres.user_activity", "DELETE FROM user_activity WHERE user_id = %s"),
                (
                    "postgres.orders",
                    "UPDATE orders SET user_id = NULL, shipping_name = NULL,"
                    " shipping_line1 = NULL, shipping_line2 = NULL, shipping_city = NULL,"
                    " shipping_postal_code = NULL, shipping_phone = NULL WHERE user_id = %s",
                ),
                ("postgres.addresses", "DELETE FROM addresses WHERE user_id = %s"),
                ("postgres.users", "DELETE FROM users WHERE user_id = %s"),
            ):
                changed = self.shop.execute(statement, (user,)).rowcount
                note = _ORDERS_NOTE if store == "postgres.orders" else ""
                results.append(StoreResult(store, changed, 0 if dry_run else changed, note))
        return results

    def remaining(self, subject: Subject) -> list[Remaining]:
        """Rows still linked to the subject, per table."""
        user = int(subject.subject_id)
        found = []
        for table in ("users", "addresses", "orders", "user_activity"):
            row = self.shop.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE user_id = %s").format(sql.Identifier(table)),
                (user,),
            ).fetchone()
            found.append(Remaining(f"postgres.{table}", int(row[0]) if row else 0))
        return found


class DynamoDBEraser:
    """The subject's Sessions and UserPreferences items."""

    name = "dynamodb"

    def __init__(self, sessions: Any, preferences: Any) -> None:
        self.sessions = sessions
        self.preferences = preferences

    def erase(self, subject: Subject, *, dry_run: bool) -> list[StoreResult]:
        """Delete the items (a dry run counts them)."""
        return soft_delete_dynamodb(
            self.sessions, self.preferences, subject.subject_id, dry_run=dry_run
        )

    def remaining(self, subject: Subject) -> list[Remaining]:
        """Items still present, per table."""
        return [
            Remaining(r.store, r.found)
            for r in soft_delete_dynamodb(
                self.sessions, self.preferences, subject.subject_id, dry_run=True
            )
        ]

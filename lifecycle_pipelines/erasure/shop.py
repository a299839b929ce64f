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

import logging
from typing import Any

import psycopg
from psycopg import sql

from lifecycle_pipelines.erasure.soft_delete import soft_delete_dynamodb
from lifecycle_pipelines.erasure.stores import Remaining, StoreResult, Subject

_ORDERS_NOTE = "kept for retention; personal fields and user reference removed"
CONFLICT_ATTEMPTS = 3  # transactions tried while rows for the subject keep arriving
log = logging.getLogger(__name__)


class ShopEraseConflict(RuntimeError):
    """A constraint stopped the shop's erasure (a row for the subject written meanwhile, say);
    the transaction was rolled back. The message names the table and the SQLSTATE only: the
    database's own message can quote the row, the subject's id among it."""


class PostgresEraser:
    """Hard delete of a subject in the shop's PostgreSQL database (see the module docstring)."""

    name = "postgres"

    def __init__(self, shop: psycopg.Connection[Any]) -> None:
        self.shop = shop

    def erase(self, subject: Subject, *, dry_run: bool) -> list[StoreResult]:
        """Delete or anonymise every row of the subject; a dry run rolls everything back.

        A row for the subject committed between two statements (an activity event, say) makes
        the user's DELETE violate a foreign key: the transaction is rolled back and run again,
        up to `CONFLICT_ATTEMPTS` times, then `ShopEraseConflict` is raised."""
        user = int(subject.subject_id)
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                with self.shop.transaction(force_rollback=dry_run):
                    return self._erase_in_transaction(user, dry_run=dry_run)
            except psycopg.errors.IntegrityError as err:
                if attempt < CONFLICT_ATTEMPTS and isinstance(
                    err, psycopg.errors.ForeignKeyViolation
                ):
                    log.warning(
                        "shop erasure: a row for the subject was written meanwhile "
                        "(attempt %d of %d); erasing again",
                        attempt,
                        CONFLICT_ATTEMPTS,
                    )
                    continue
                raise ShopEraseConflict(
                    f"postgres.{err.diag.table_name or '?'}: {type(err).__name__} (SQLSTATE "
                    f"{err.sqlstate}) while erasing; nothing changed in the shop"
                ) from None
        raise AssertionError("unreachable")

    def _erase_in_transaction(self, user: int, *, dry_run: bool) -> list[StoreResult]:
        # No deletion tombstone for the warehouse (as the archive purge): the warehouse's own
        # eraser removes the subject there, and a tombstone would put their pseudonymous key
        # back among the warehouse's recorded deletions after the certificate.
        self.shop.execute("SELECT set_config('lifecycle.purge', 'on', true)")
        results = []
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

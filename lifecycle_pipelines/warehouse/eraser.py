"""Hard delete of one data subject from the warehouse (Redshift, or the PostgreSQL stand-in).

The warehouse never holds a user id or a personal column: the subject appears only as their
pseudonymous `user_key` (HMAC-SHA256 of the user id), the key of dim_users and a column of
fact_orders. Erasure deletes the dim_users row and sets `user_key` to NULL on the subject's
fact_orders rows (the orders stay, anonymous, so revenue figures do not change), in one
transaction, with bound parameters only: the same statements run on both engines.

From the soft delete on, the hourly load already leaves the subject out (see `loader.py`); this
eraser removes what earlier loads wrote. Counts are logged, never the key.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, get_args

from lifecycle_pipelines.erasure.stores import Remaining, StoreResult, Subject
from lifecycle_pipelines.warehouse import sql
from lifecycle_pipelines.warehouse.model import DIM_USERS, FACT_ORDERS, USER_KEY, Engine

if TYPE_CHECKING:
    from lifecycle_pipelines.resources.warehouse import WarehouseResource

log = logging.getLogger(__name__)
_USER_KEY = re.compile(r"^[0-9a-f]{64}$")
T = TypeVar("T")
_NOT_LOADED = "the star schema has no such table yet: nothing was ever loaded"


class WarehouseEraser:
    """Erases one subject from the star schema (dim_users, fact_orders); see the module docstring.

    `conn` is either a DB-API connection (used as is, left open) or a factory returning a new one
    (opened per call and closed after it). A given connection must not be in the middle of
    another transaction; if it is in autocommit mode, it is switched to one transaction for the
    call and restored after.
    """

    name = "warehouse"

    def __init__(
        self,
        conn: Callable[[], Any] | Any,
        *,
        schema: str,
        engine: Engine,
        logger: logging.Logger | Any = log,
    ) -> None:
        if engine not in get_args(Engine):
            raise ValueError(f"engine: must be one of {list(get_args(Engine))}, got {engine!r}")
        if not schema:
            raise ValueError("schema: the warehouse schema name is required")
        self.conn = conn
        self.schema = schema
        self.engine = engine
        self.log = logger

    @classmethod
    def from_resource(cls, warehouse: WarehouseResource) -> WarehouseEraser:
        """The eraser of an environment's warehouse (a new connection per call)."""
        return cls(warehouse.connect, schema=warehouse.schema_name, engine=warehouse.backend)

    def erase(self, subject: Subject, *, dry_run: bool) -> list[StoreResult]:
        """Delete the subject's dim_users row and null their fact_orders user keys, in one
        transaction (committed once; a dry run only counts and rolls back)."""
        key = _checked_key(subject)

        def work(cur: Any) -> list[StoreResult]:
            present = self._present(cur)
            results = []
            for table, statement in (
                (DIM_USERS.name, sql.delete_matching),
                (FACT_ORDERS.name, sql.null_matching),
                (sql.DELETIONS_TABLE, sql.delete_matching),
            ):
                store = f"{self.name}.{table}"
                if table not in present:
                    results.append(StoreResult(store, 0, 0, _NOT_LOADED))
                    continue
                found = self._count(cur, table, key)
                changed = 0
                if found and not dry_run:
                    cur.execute(statement(self.schema, table, _KEY_COLUMN[table]), (key,))
                    rowcount = getattr(cur, "rowcount", None)
                    changed = found if rowcount is None or rowcount < 0 else int(rowcount)
                results.append(StoreResult(store, found, changed))
            return results

        results = self._in_transaction(work, commit=not dry_run)
        self.log.info(
            "warehouse erasure%s: %s",
            " (dry run)" if dry_run else "",
            "; ".join(f"{r.store} found {r.found} changed {r.changed}" for r in results),
        )
        return results

    def remaining(self, subject: Subject) -> list[Remaining]:
        """Rows of dim_users, fact_orders and the loads' recorded deletions (a soft-deleted
        user's key) still carrying the subject's user key."""
        key = _checked_key(subject)

        def work(cur: Any) -> list[Remaining]:
            present = self._present(cur)
            return [
                Remaining(f"{self.name}.{table}", self._count(cur, table, key))
                if table in present
                else Remaining(f"{self.name}.{table}", 0, _NOT_LOADED)
                for table in _TABLES
            ]

        return self._in_transaction(work, commit=False)

    # -- helpers ---------------------------------------------------------------------------
    def _present(self, cur: Any) -> set[str]:
        cur.execute(sql.existing_tables(len(_TABLES)), (self.schema, *_TABLES))
        return {str(row[0]) for row in cur.fetchall()}

    def _count(self, cur: Any, table: str, key: str) -> int:
        cur.execute(sql.count_matching(self.schema, table, _KEY_COLUMN[table]), (key,))
        row = cur.fetchone()
        return int(row[0]) if row else 0

    def _in_transaction(self, work: Callable[[Any], T], *, commit: bool) -> T:
        """`work(cursor)` in one transaction, committed once if `commit`, else rolled back (also
        on any error). A factory's connection is closed after; a given one's autocommit is
        switched off for the call and restored."""
        owned = not hasattr(self.conn, "cursor")
        conn: Any = self.conn() if owned else self.conn
        autocommit = getattr(conn, "autocommit", None) is True
        ended = False
        try:
            if autocommit:
                conn.autocommit = False
            with conn.cursor() as cur:
                value = work(cur)
            if commit:
                conn.commit()
            else:
                conn.rollback()
            ended = True
            return value
        finally:
            try:
                if not ended:
                    conn.rollback()
                if autocommit:
                    conn.autocommit = True
            finally:
                if owned:
                    conn.close()


# the tables holding a user key, and the column it is in (a load records a soft-deleted
# user's key among its deletions, `row_key`, until the erasure or 90 days)
_KEY_COLUMN = {
    DIM_USERS.name: USER_KEY.name,
    FACT_ORDERS.name: USER_KEY.name,
    sql.DELETIONS_TABLE: "row_key",
}
_TABLES = tuple(_KEY_COLUMN)


def _checked_key(subject: Subject) -> str:
    """The subject's user key, refused unless it is a pseudonym (64 lowercase hex digits)."""
    if not _USER_KEY.match(subject.user_key):
        raise ValueError(
            "subject.user_key: must be the HMAC-SHA256 pseudonym (64 lowercase hex digits); "
            "nothing was changed"
        )
    return subject.user_key

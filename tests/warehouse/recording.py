"""A DB-API connection that records what it is asked to run, standing in for Redshift (which is
not reachable here) in the tests of the SQL the Redshift backend issues."""

from __future__ import annotations

from typing import Any, cast

from lifecycle_pipelines.warehouse.model import catalog_type

FIGURES_PREFIX = "SELECT count(*), COALESCE(sum("


class RecordingConnection:
    """Records statements with their parameters; answers every count with `found`, every
    reconciliation-figures query with zeros, and lists `dim_users` and `fact_orders` as
    existing tables. A statement starting with `fail_on` raises, as a lost connection would."""

    def __init__(self, found: int = 2, fail_on: str | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.found = found
        self.fail_on = fail_on
        self.rowcount = -1
        self.autocommit = False

    @property
    def statements(self) -> list[str]:
        return [s for s, _ in self.calls]

    def cursor(self) -> RecordingConnection:
        return self

    def __enter__(self) -> RecordingConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def execute(self, statement: str, params: Any = None) -> None:
        text = " ".join(str(statement).split())
        if self.fail_on and text.startswith(self.fail_on):
            raise RuntimeError("connection lost")
        self.calls.append((text, params))
        self.rowcount = self.found if text.startswith(("DELETE", "UPDATE")) else -1

    def executemany(self, statement: str, rows: Any) -> None:
        self.calls.append((" ".join(str(statement).split()), rows))

    def fetchone(self) -> tuple[int, ...]:
        last = self.calls[-1][0] if self.calls else ""
        if last.startswith(FIGURES_PREFIX):
            return (0,) * (1 + last.count("COALESCE("))
        return (self.found,)

    def fetchall(self) -> list[Any]:
        last, params = self.calls[-1] if self.calls else ("", None)
        if "information_schema" in last:  # every table asked about exists
            return [(name,) for name in cast(tuple[str, ...], params)[1:]]
        if "format_type(" in last:  # the catalog's columns: those of the recorded CREATE TABLE
            schema, table = cast(tuple[str, str], params)
            return self._created_columns(schema, table)
        return []

    def _created_columns(self, schema: str, table: str) -> list[tuple[str, str]]:
        prefix = f'CREATE TABLE IF NOT EXISTS "{schema}"."{table}" ('
        created = next((s for s in self.statements if s.startswith(prefix)), None)
        if created is None:
            return []
        body = created[len(prefix) :].split(", PRIMARY KEY", 1)[0]
        pairs = (column.split(" ", 1) for column in body.split(", "))
        return [(name.strip('"'), catalog_type(type_)) for name, type_ in pairs]

    def commit(self) -> None:
        self.calls.append(("COMMIT", None))

    def rollback(self) -> None:
        self.calls.append(("ROLLBACK", None))

    def close(self) -> None:
        self.calls.append(("CLOSE", None))

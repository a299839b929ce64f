"""The source table's real columns, their Arrow types, and the check that the retention policy
matches them. Archival refuses to start when the policy names a column the table does not have,
or when a key is not an integer, so a wrong policy can never write or delete anything."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg
import pyarrow as pa

from lifecycle_pipelines.policy import ChildTable, DataTypePolicy


class ArchiveConfigError(ValueError):
    """The policy does not match the source table; the message names the field."""


@dataclass(frozen=True)
class SourceColumn:
    """One column of a source table as PostgreSQL reports it."""

    name: str
    pg_type: str  # format_type(), e.g. `numeric(12,2)`, `character varying(200)`
    not_null: bool

    @property
    def arrow_type(self) -> pa.DataType:
        return arrow_type(self.pg_type, self.name)


_NUMERIC = re.compile(r"^numeric\((\d+),(\d+)\)$")
_SIMPLE_TYPES: dict[str, pa.DataType] = {
    "bigint": pa.int64(),
    "integer": pa.int32(),
    "smallint": pa.int16(),
    "boolean": pa.bool_(),
    "text": pa.string(),
    "inet": pa.string(),
    "uuid": pa.string(),
    "date": pa.date32(),
    "double precision": pa.float64(),
    "real": pa.float32(),
    "jsonb": pa.string(),
    "json": pa.string(),
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
    "timestamp without time zone": pa.timestamp("us"),
}


def arrow_type(pg_type: str, column: str = "?") -> pa.DataType:
    """The Arrow type archives use for a PostgreSQL type (lossless for every supported type)."""
    if pg_type in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[pg_type]
    if pg_type.startswith(("character varying", "character(", "character")):
        return pa.string()
    match = _NUMERIC.match(pg_type)
    if match:
        return pa.decimal128(int(match[1]), int(match[2]))
    raise ArchiveConfigError(
        f"column {column}: PostgreSQL type {pg_type!r} has no lossless archive mapping "
        "(use numeric(p,s) for money and give other types an explicit mapping)"
    )


def read_columns(conn: psycopg.Connection[Any], schema: str, table: str) -> list[SourceColumn]:
    """The columns of `schema.table` in their table order; empty when the table does not exist."""
    rows = conn.execute(
        """
        SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull
        FROM pg_attribute a
        JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """,
        (schema, table),
    ).fetchall()
    return [SourceColumn(name, pg_type, not_null) for name, pg_type, not_null in rows]


@dataclass(frozen=True)
class TableShape:
    """A source table checked against its policy entry."""

    schema: str
    table: str
    columns: tuple[SourceColumn, ...]
    primary_key: str
    time_column: str | None
    version_column: str | None
    subject_column: str | None
    personal_columns: tuple[str, ...]
    money_columns: tuple[str, ...]
    foreign_key: str | None = None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> SourceColumn:
        return next(c for c in self.columns if c.name == name)

    @property
    def clear_columns(self) -> list[str]:
        """Columns stored in clear in the archive (all but the personal ones)."""
        return [c.name for c in self.columns if c.name not in self.personal_columns]

    @property
    def required_columns(self) -> list[str]:
        """Columns declared NOT NULL in the source that stay in clear."""
        return [c.name for c in self.columns if c.not_null and c.name in self.clear_columns]

    def arrow_schema(self) -> pa.Schema:
        return pa.schema(
            [pa.field(c.name, c.arrow_type, nullable=not c.not_null) for c in self.columns]
        )


def _check(
    where: str, columns: list[SourceColumn], names: dict[str, list[str]]
) -> dict[str, SourceColumn]:
    by_name = {c.name: c for c in columns}
    for field, wanted in names.items():
        missing = [n for n in wanted if n not in by_name]
        if missing:
            raise ArchiveConfigError(
                f"retention.yaml: {where}.{field}: column(s) {missing} not in the source table "
                f"(it has {sorted(by_name)})"
            )
    return by_name


def _integer_key(where: str, field: str, column: SourceColumn) -> None:
    if column.pg_type not in ("bigint", "integer", "smallint"):
        raise ArchiveConfigError(
            f"retention.yaml: {where}.{field}: archival needs a single integer key column, "
            f"{column.name} is {column.pg_type}"
        )


def _version_column(
    where: str, field: str, schema: str, table: str, columns: list[SourceColumn]
) -> str:
    """The column that versions a row (`updated_at`); the purge compares it with the snapshot's
    to keep rows changed after the extraction, so a table without one cannot be archived."""
    if not any(c.name == "updated_at" for c in columns):
        raise ArchiveConfigError(
            f"retention.yaml: {where}.{field}: {schema}.{table} has no updated_at column; the "
            "purge needs it to keep rows that change after the extraction"
        )
    return "updated_at"


def check_parent(conn: psycopg.Connection[Any], name: str, policy: DataTypePolicy) -> TableShape:
    """Check the parent table of data type `name` against its policy; ArchiveConfigError if not."""
    where = f"data_types.{name}"
    columns = read_columns(conn, policy.schema_name, policy.table)
    if not columns:
        raise ArchiveConfigError(
            f"retention.yaml: {where}.table: {policy.schema_name}.{policy.table} does not exist"
        )
    if len(policy.primary_key) != 1:
        raise ArchiveConfigError(f"retention.yaml: {where}.primary_key: give exactly one column")
    version = _version_column(where, "table", policy.schema_name, policy.table, columns)
    by_name = _check(
        where,
        columns,
        {
            "primary_key": policy.primary_key,
            "time_column": [policy.time_column],
            "subject_column": [policy.subject_column] if policy.subject_column else [],
            "personal_columns": policy.personal_columns,
            "money_columns": policy.money_columns,
        },
    )
    _integer_key(where, "primary_key", by_name[policy.primary_key[0]])
    for money in policy.money_columns:
        if not _NUMERIC.match(by_name[money].pg_type):
            raise ArchiveConfigError(
                f"retention.yaml: {where}.money_columns: {money} is {by_name[money].pg_type}, "
                "not numeric(p,s)"
            )
    for column in columns:
        column.arrow_type  # noqa: B018 - raises for a type without a lossless mapping
    return TableShape(
        schema=policy.schema_name,
        table=policy.table,
        columns=tuple(columns),
        primary_key=policy.primary_key[0],
        time_column=policy.time_column,
        version_column=version,
        subject_column=policy.subject_column,
        personal_columns=tuple(policy.personal_columns),
        money_columns=tuple(policy.money_columns),
    )


def check_child(
    conn: psycopg.Connection[Any], name: str, index: int, child: ChildTable, parent: TableShape
) -> TableShape:
    """Check child table `index` of data type `name`; it follows its parent's subject."""
    where = f"data_types.{name}.children[{index}]"
    columns = read_columns(conn, child.schema_name, child.table)
    if not columns:
        raise ArchiveConfigError(
            f"retention.yaml: {where}.table: {child.schema_name}.{child.table} does not exist"
        )
    if len(child.primary_key) != 1:
        raise ArchiveConfigError(f"retention.yaml: {where}.primary_key: give exactly one column")
    by_name = _check(
        where,
        columns,
        {
            "primary_key": child.primary_key,
            "foreign_key": [child.foreign_key],
            "personal_columns": child.personal_columns,
            "money_columns": child.money_columns,
        },
    )
    _integer_key(where, "primary_key", by_name[child.primary_key[0]])
    _integer_key(where, "foreign_key", by_name[child.foreign_key])
    if child.personal_columns:
        raise ArchiveConfigError(
            f"retention.yaml: {where}.personal_columns: child tables carry no subject column; "
            "keep personal data on the parent"
        )
    for column in columns:
        column.arrow_type  # noqa: B018
    version = _version_column(where, "table", child.schema_name, child.table, columns)
    return TableShape(
        schema=child.schema_name,
        table=child.table,
        columns=tuple(columns),
        primary_key=child.primary_key[0],
        time_column=None,
        version_column=version,
        subject_column=None,
        personal_columns=(),
        money_columns=tuple(child.money_columns),
        foreign_key=child.foreign_key,
    )

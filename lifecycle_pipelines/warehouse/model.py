"""The star schema: which source columns each warehouse table takes, which it deliberately
leaves out (personal data, unbounded text), and the warehouse type of every column, derived
from the source column's own type with its length and precision (never VARCHAR(MAX)).

A source column that is neither taken nor ignored is a schema change: `check_source` reports it
(and a taken column that disappeared) naming the table and column. A changed type is found by
comparing the warehouse's own column types (`catalog_type`) with those the source now needs,
before anything is loaded (`WarehouseTarget.create_tables`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from lifecycle_pipelines.archive.columns import SourceColumn

Engine = Literal["postgres", "redshift"]
_VARCHAR = re.compile(r"^character varying\((\d+)\)$")
_CHAR = re.compile(r"^character\((\d+)\)$")
_NUMERIC = re.compile(r"^numeric\((\d+),(\d+)\)$")
_SIMPLE = {
    "bigint": "BIGINT",
    "integer": "INTEGER",
    "smallint": "SMALLINT",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp with time zone": "TIMESTAMPTZ",
    "timestamp without time zone": "TIMESTAMP",
    "double precision": "DOUBLE PRECISION",
    "inet": "VARCHAR(45)",
}


class SchemaChange(ValueError):
    """The source no longer matches the warehouse model; nothing was loaded."""


def warehouse_type(column: SourceColumn, engine: Engine, where: str) -> str:
    """The warehouse type of a source column (Redshift VARCHAR lengths are bytes: 4 per char)."""
    pg_type = column.pg_type
    if pg_type in _SIMPLE:
        return _SIMPLE[pg_type]
    if match := _VARCHAR.match(pg_type):
        length = int(match[1])
        return f"VARCHAR({min(length * 4, 65535) if engine == 'redshift' else length})"
    if match := _CHAR.match(pg_type):
        return f"CHAR({match[1]})"
    if match := _NUMERIC.match(pg_type):
        return f"NUMERIC({match[1]},{match[2]})"
    raise SchemaChange(
        f"{where}.{column.name}: source type {pg_type!r} has no bounded warehouse type; "
        "ignore the column or map it explicitly in warehouse/model.py"
    )


# the inverse of _SIMPLE for the types the warehouse writes under their own name
_CATALOG_NAMES = {ddl: pg for pg, ddl in _SIMPLE.items() if "(" not in ddl}


def catalog_type(ddl_type: str) -> str:
    """A warehouse type as the catalog spells it (`format_type`): `VARCHAR(12)` is
    `character varying(12)`, `TIMESTAMPTZ` is `timestamp with time zone`."""
    spelled = ddl_type.strip().upper()
    if match := re.fullmatch(r"VARCHAR\((\d+)\)", spelled):
        return f"character varying({match[1]})"
    if match := re.fullmatch(r"CHAR\((\d+)\)", spelled):
        return f"character({match[1]})"
    if match := re.fullmatch(r"NUMERIC\((\d+), ?(\d+)\)", spelled):
        return f"numeric({match[1]},{match[2]})"
    return _CATALOG_NAMES.get(spelled, spelled.lower())


@dataclass(frozen=True)
class Derived:
    """A column computed by the load, not copied from the source."""

    name: str
    type: str
    description: str


@dataclass(frozen=True)
class WarehouseTable:
    """One table of the star schema and where its rows come from."""

    name: str
    key: str
    source_table: str
    taken: tuple[str, ...]
    ignored: tuple[str, ...] = ()
    derived: tuple[Derived, ...] = ()
    money: tuple[str, ...] = ()
    version: str | None = "updated_at"  # rows change in the hour of their updated_at


USER_KEY = Derived("user_key", "CHAR(64)", "HMAC-SHA256 of the user id (pseudonymous)")
# The reconciliation figures of dim_users take a user key (64 hex digits) as the sum of the
# eight 32-bit numbers its groups of 8 hex digits spell: the warehouse holds no user id, and the
# source side computes the same number from the HMACs of its own user ids.
USER_KEY_HEX_DIGITS = 64
USER_KEY_WORD_DIGITS = 8
DATE_KEY = Derived("date_key", "INTEGER", "YYYYMMDD of created_at (UTC)")

FACT_ORDERS = WarehouseTable(
    name="fact_orders",
    key="order_id",
    source_table="orders",
    taken=(
        "order_id", "status", "currency", "subtotal", "shipping_fee", "tax", "total",
        "shipping_country", "created_at", "updated_at",
    ),
    ignored=(
        "user_id", "shipping_name", "shipping_line1", "shipping_line2", "shipping_city",
        "shipping_postal_code", "shipping_phone",
    ),
    derived=(USER_KEY, DATE_KEY),
    money=("subtotal", "shipping_fee", "tax", "total"),
)  # fmt: skip
FACT_ORDER_ITEMS = WarehouseTable(
    name="fact_order_items",
    key="order_item_id",
    source_table="order_items",
    taken=(
        "order_item_id", "order_id", "product_id", "quantity", "unit_price", "line_total",
        "created_at", "updated_at",
    ),
    derived=(DATE_KEY,),
    money=("unit_price", "line_total"),
)  # fmt: skip
DIM_PRODUCTS = WarehouseTable(
    name="dim_products",
    key="product_id",
    source_table="products",
    taken=(
        "product_id", "sku", "name", "brand_id", "category_id", "price", "currency",
        "is_active", "created_at", "updated_at", "deleted_at",
    ),
    ignored=("description",),
    money=("price",),
)  # fmt: skip
DIM_USERS = WarehouseTable(
    name="dim_users",
    key="user_key",
    source_table="users",
    taken=("locale", "created_at", "updated_at", "deleted_at"),
    ignored=("user_id", "email", "full_name", "phone"),
    derived=(USER_KEY,),
)
TABLES = (DIM_USERS, DIM_PRODUCTS, FACT_ORDERS, FACT_ORDER_ITEMS)
DIM_DATE_COLUMNS = (
    ("date_key", "INTEGER"),
    ("calendar_date", "DATE"),
    ("year", "SMALLINT"),
    ("quarter", "SMALLINT"),
    ("month", "SMALLINT"),
    ("day", "SMALLINT"),
    ("iso_weekday", "SMALLINT"),
)


def check_source(
    table: WarehouseTable, source: list[SourceColumn], on_new_column: Literal["fail", "ignore"]
) -> list[str]:
    """Compare the source table with the model; returns new columns tolerated by policy.

    A taken column missing from the source always fails; a new column fails unless the policy
    is `ignore`, in which case it is returned (and reported) but not loaded.
    """
    names = {c.name for c in source}
    missing = [c for c in table.taken if c not in names]
    if missing:
        raise SchemaChange(
            f"{table.source_table}: column(s) {missing} loaded into {table.name} no longer exist "
            "in the source; nothing was loaded"
        )
    new = sorted(names - set(table.taken) - set(table.ignored))
    if new and on_new_column == "fail":
        raise SchemaChange(
            f"{table.source_table}: new source column(s) {new} are not in the warehouse model "
            f"of {table.name}; add each to `taken` or `ignored` in warehouse/model.py (or run "
            "with on_new_column=ignore); nothing was loaded"
        )
    return new


def columns_of(
    table: WarehouseTable, source: list[SourceColumn], engine: Engine
) -> list[tuple[str, str]]:
    """(name, warehouse type) of every column of `table`, in load order."""
    by_name = {c.name: c for c in source}
    columns = [
        (name, warehouse_type(by_name[name], engine, table.source_table))
        for name in table.taken
        if name != table.key or table.key not in {d.name for d in table.derived}
    ]
    derived = [(d.name, d.type) for d in table.derived]
    if table.key in {d.name for d in table.derived}:
        return derived[:1] + columns + derived[1:]
    return columns + derived

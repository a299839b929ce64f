"""Reconciliation figures, computed independently on the source (SQL) and on an archived object
(Arrow): row count, the sum of the primary keys, an order-independent checksum of the primary
keys, and the sums of money columns in integer cents.

The key checksum is the sum over rows of h(k) = x^3 mod p with x = (k*a + b) mod p and
p = 2^31 - 1: order-independent, non-linear (a swapped, missing or duplicated key changes it),
and computable exactly with 64-bit integers in both PostgreSQL and NumPy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

HASH_P = 2_147_483_647
HASH_A = 48_271
HASH_B = 12_345


@dataclass(frozen=True)
class ReconStats:
    """The reconciliation figures of one set of rows."""

    rows: int
    pk_sum: int
    pk_hash_sum: int
    money_cents: dict[str, int] = field(default_factory=dict)

    def as_parameters(self) -> dict[str, int]:
        """GX suite parameters named `source_*` for the reconciliation expectations."""
        params = {
            "source_rows": self.rows,
            "source_pk_sum": self.pk_sum,
            "source_pk_hash_sum": self.pk_hash_sum,
        }
        params.update({f"source_cents_{name}": cents for name, cents in self.money_cents.items()})
        return params

    def figures(self) -> dict[str, int]:
        """The figures by name (`rows`, `pk_sum`, `pk_hash_sum`, `cents_<money column>`), as
        the other side's GX batch carries them."""
        named = {"rows": self.rows, "pk_sum": self.pk_sum, "pk_hash_sum": self.pk_hash_sum}
        named.update({f"cents_{name}": cents for name, cents in self.money_cents.items()})
        return named

    def plus(self, other: ReconStats) -> ReconStats:
        """The figures of both sets of rows together."""
        money = {m: self.money_cents.get(m, 0) + other.money_cents.get(m, 0) for m in
                 {**self.money_cents, **other.money_cents}}  # fmt: skip
        return ReconStats(
            rows=self.rows + other.rows,
            pk_sum=self.pk_sum + other.pk_sum,
            pk_hash_sum=self.pk_hash_sum + other.pk_hash_sum,
            money_cents=money,
        )

    def money_text(self) -> dict[str, str]:
        """Money sums as decimal text (for metadata and the manifest)."""
        return {name: str(Decimal(cents).scaleb(-2)) for name, cents in self.money_cents.items()}


def pk_hash(keys: np.ndarray) -> np.ndarray:
    """h(k) for an int64 array (see the module docstring)."""
    x = (np.mod(keys.astype(np.int64), HASH_P) * HASH_A + HASH_B) % HASH_P
    return (x * x % HASH_P) * x % HASH_P


def pk_hash_sql(column: sql.Composable) -> sql.Composable:
    """The same h(k) as a bigint expression of PostgreSQL and Redshift. `mod()`, not `%`: the
    text may be run with bound `%s` parameters."""
    x = sql.SQL("mod(mod(mod({c}, {p}) + {p}, {p}) * {a} + {b}, {p})").format(
        c=column, p=sql.Literal(HASH_P), a=sql.Literal(HASH_A), b=sql.Literal(HASH_B)
    )
    return sql.SQL("mod(mod({x} * {x}, {p}) * {x}, {p})").format(x=x, p=sql.Literal(HASH_P))


def cents_sum_sql(column: sql.Composable) -> sql.Composable:
    """The sum of a money column in integer cents (NULL as 0) as a SQL expression, for both
    PostgreSQL and Redshift. The sum is taken first (exact NUMERIC arithmetic) and scaled once:
    for money of scale <= 2, the only kind `cents` accepts, that equals the sum of each value in
    cents, at a fraction of the per-row cost."""
    return sql.SQL("COALESCE((sum({}) * 100)::bigint, 0)").format(column)


def figures_sql(
    primary_key: sql.Composable, money_columns: list[str], alias: str | None = None
) -> sql.Composable:
    """The select list of the figures, for PostgreSQL and Redshift: count, key sum, key checksum,
    money sums in cents (read back by `stats_of_row`); money columns qualified by `alias` when
    given."""
    money = [
        cents_sum_sql(sql.Identifier(alias, m) if alias else sql.Identifier(m))
        for m in money_columns
    ]
    return sql.SQL("count(*), COALESCE(sum({pk}), 0), COALESCE(sum({h}), 0){money}").format(
        pk=primary_key,
        h=pk_hash_sql(primary_key),
        money=sql.SQL("").join(sql.SQL(", ") + m for m in money),
    )


def stats_of_row(row: tuple[Any, ...] | Any, money_columns: list[str]) -> ReconStats:
    """The figures from the first columns of a row selected with `figures_sql`."""
    return ReconStats(
        rows=int(row[0]),
        pk_sum=int(row[1]),
        pk_hash_sum=int(row[2]),
        money_cents={m: int(row[3 + i]) for i, m in enumerate(money_columns)},
    )


def source_stats(
    conn: psycopg.Connection[Any],
    relation: sql.Composable,
    primary_key: str,
    money_columns: list[str],
    where: sql.Composable,
) -> ReconStats:
    """The figures of `SELECT ... FROM relation WHERE where` computed by PostgreSQL."""
    query = sql.SQL("SELECT {} FROM {} WHERE {}").format(
        figures_sql(sql.Identifier(primary_key), money_columns), relation, where
    )
    row = conn.execute(query).fetchone()
    assert row is not None
    return stats_of_row(row, money_columns)


@dataclass(frozen=True)
class PartsStats:
    """Source figures per extracted part, and of the snapshot rows outside every part."""

    parts: list[ReconStats]
    outside: ReconStats


def parts_source_stats(
    conn: psycopg.Connection[Any],
    relation: sql.Composable,
    where: sql.Composable,
    primary_key: str,
    money_columns: list[str],
    key_ranges: list[tuple[int | None, int | None]],
) -> PartsStats:
    """The figures of every part (rows whose key lies in its range) in one scan; rows in no
    range are counted apart, so rows the extraction missed cannot go unnoticed."""
    pk = sql.Identifier("t", primary_key)
    bucket = sql.SQL("CASE {} ELSE -1 END").format(
        sql.SQL(" ").join(
            sql.SQL("WHEN {pk} BETWEEN {lo} AND {hi} THEN {i}").format(
                pk=pk, lo=sql.Literal(lo), hi=sql.Literal(hi), i=sql.Literal(i)
            )
            for i, (lo, hi) in enumerate(key_ranges)
        )
        if key_ranges
        else sql.SQL("WHEN false THEN 0")
    )
    query = sql.SQL("SELECT {b} AS part, {figures} FROM {rel} WHERE {w} GROUP BY 1").format(
        b=bucket, figures=figures_sql(pk, money_columns, alias="t"), rel=relation, w=where
    )
    empty = ReconStats(0, 0, 0, dict.fromkeys(money_columns, 0))
    found: dict[int, ReconStats] = {}
    for row in conn.execute(query):
        found[int(row[0])] = stats_of_row(row[1:], money_columns)
    return PartsStats(
        parts=[found.get(i, empty) for i in range(len(key_ranges))],
        outside=found.get(-1, empty),
    )


def cents(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A decimal money column as int64 cents (NULL as 0), exactly."""
    scaled = pc.multiply(pc.cast(column, pa.decimal128(30, 2)), pa.scalar(Decimal(100)))
    return pc.cast(scaled, pa.int64()).fill_null(0).to_numpy()


def table_stats(table: pa.Table, primary_key: str, money_columns: list[str]) -> ReconStats:
    """The same figures computed from an Arrow table (e.g. the archived object read back)."""
    keys = table.column(primary_key).to_numpy()
    return ReconStats(
        rows=table.num_rows,
        pk_sum=int(keys.sum()),
        pk_hash_sum=int(pk_hash(keys).sum()),
        money_cents={m: int(cents(table.column(m)).sum()) for m in money_columns},
    )

"""What one archive run covers: the partition checked (an eligible month), the policy checked
against the real columns, and the SQL that selects a month's rows of a parent or child table."""

from __future__ import annotations

from datetime import date
from typing import Any

from psycopg import sql

from lifecycle_pipelines.archive.columns import TableShape, check_child, check_parent
from lifecycle_pipelines.archive.plan import ArchiveMonth, check_eligible
from lifecycle_pipelines.policy import DataTypePolicy


def check_partition(
    data_type: str, policy: DataTypePolicy, partition_key: str, today: date
) -> ArchiveMonth:
    """Parse and check a partition key; PartitionError if unknown, malformed or too recent."""
    month = ArchiveMonth.parse(data_type, partition_key)
    check_eligible(month, policy, today)
    return month


def check_shapes(conn: Any, data_type: str, policy: DataTypePolicy) -> list[TableShape]:
    """The parent and child shapes checked against the policy (ArchiveConfigError if wrong)."""
    parent = check_parent(conn, data_type, policy)
    return [parent] + [
        check_child(conn, data_type, i, child, parent) for i, child in enumerate(policy.children)
    ]


def month_relation(
    shape: TableShape,
    parent: TableShape,
    month: ArchiveMonth,
    parent_keys: tuple[int, int] | None = None,
) -> tuple[sql.Composable, sql.Composable]:
    """(FROM clause, WHERE clause) selecting the month's rows of `shape` (literals only).

    A child is selected through its parent's month; `parent_keys`, the (lowest, highest) key of
    the month's parents as extracted in the same snapshot, adds the redundant condition
    `foreign key BETWEEN lowest AND highest`, which lets PostgreSQL read the child through its
    foreign-key index instead of scanning the whole table every month (the join still decides
    which rows belong to the month)."""
    start, end = sql.Literal(month.start), sql.Literal(month.end)
    if shape.foreign_key is None:
        assert shape.time_column is not None
        rel = sql.SQL("{} AS t").format(sql.Identifier(shape.schema, shape.table))
        time_col = sql.Identifier("t", shape.time_column)
    else:
        assert parent.time_column is not None
        rel = sql.SQL("{} AS t JOIN {} AS p ON t.{} = p.{}").format(
            sql.Identifier(shape.schema, shape.table),
            sql.Identifier(parent.schema, parent.table),
            sql.Identifier(shape.foreign_key),
            sql.Identifier(parent.primary_key),
        )
        time_col = sql.Identifier("p", parent.time_column)
    where = sql.SQL("{c} >= {s} AND {c} < {e}").format(c=time_col, s=start, e=end)
    if shape.foreign_key is not None and parent_keys is not None:
        where = sql.SQL("{w} AND t.{fk} BETWEEN {lo} AND {hi}").format(
            w=where,
            fk=sql.Identifier(shape.foreign_key),
            lo=sql.Literal(parent_keys[0]),
            hi=sql.Literal(parent_keys[1]),
        )
    return rel, where


def parent_key_range(conn: Any, parent: TableShape, month: ArchiveMonth) -> tuple[int, int] | None:
    """The lowest and highest key of the month's parents, by SQL in the snapshot of `conn`
    (None for an empty month): the bounds of `month_relation`'s redundant child condition.

    The keys are read through the time index (`OFFSET 0` keeps PostgreSQL from answering
    min/max by walking the primary key index until a row of the month turns up, which reads
    every older row)."""
    rel, where = month_relation(parent, parent, month)
    row = conn.execute(
        sql.SQL(
            "SELECT min(k), max(k) FROM (SELECT t.{pk} AS k FROM {rel} WHERE {w} OFFSET 0) AS q"
        ).format(pk=sql.Identifier(parent.primary_key), rel=rel, w=where)
    ).fetchone()
    return None if row is None or row[0] is None else (int(row[0]), int(row[1]))

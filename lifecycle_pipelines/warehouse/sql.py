"""The warehouse SQL of Redshift and PostgreSQL: DDL, staging tables, locks, MERGE, the
reconciliation frame.

Statements are rendered to text from `psycopg.sql` identifiers so that the same text runs on
both engines (redshift_connector takes text); values are bound parameters. Most statements are
common; where the engines differ the function says so: PostgreSQL's MERGE takes a condition on
WHEN MATCHED (`merge_changed`, one statement) where Redshift drops stale staged rows first
(`drop_older` then `merge`), and their LOCK statements differ (`lock_tables`). Which one runs is
decided in `loader.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from psycopg import sql

if TYPE_CHECKING:
    from lifecycle_pipelines.warehouse.model import Engine, WarehouseTable


def render(statement: sql.Composable) -> str:
    """The SQL text of a composed statement (identifiers quoted, no connection needed)."""
    return statement.as_string(None)


def ident(*names: str) -> str:
    return render(sql.Identifier(*names))


def create_schema(schema: str) -> str:
    return f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}"


def create_table(schema: str, table: str, columns: list[tuple[str, str]], key: str) -> str:
    """CREATE TABLE IF NOT EXISTS with explicit types and the primary key."""
    body = ", ".join(f"{ident(name)} {type_}" for name, type_ in columns)
    return f"CREATE TABLE IF NOT EXISTS {ident(schema, table)} ({body}, PRIMARY KEY ({ident(key)}))"


def create_stage(schema: str, table: str, stage: str) -> str:
    """A temporary staging table shaped like the target (dropped with the session)."""
    return f"CREATE TEMP TABLE {ident(stage)} (LIKE {ident(schema, table)})"


def drop_older(schema: str, table: str, stage: str, key: str, version: str) -> str:
    """Drop staged rows older than the warehouse's (a late re-run never moves a row back)."""
    return (
        f"DELETE FROM {ident(stage)} USING {ident(schema, table)} t "
        f"WHERE {ident(stage)}.{ident(key)} = t.{ident(key)} "
        f"AND {ident(stage)}.{ident(version)} < t.{ident(version)}"
    )


def merge(schema: str, table: str, stage: str, key: str, columns: list[str]) -> str:
    """MERGE the staged rows into the target: update matches, insert the rest."""
    updates = ", ".join(f"{ident(c)} = s.{ident(c)}" for c in columns if c != key)
    names = ", ".join(ident(c) for c in columns)
    values = ", ".join(f"s.{ident(c)}" for c in columns)
    return (
        f"MERGE INTO {ident(schema, table)} USING {ident(stage)} s "
        f"ON {ident(schema, table)}.{ident(key)} = s.{ident(key)} "
        f"WHEN MATCHED THEN UPDATE SET {updates} "
        f"WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({values})"
    )


def merge_changed(
    schema: str, table: str, stage: str, key: str, columns: list[str], version: str | None
) -> str:
    """MERGE for PostgreSQL: a matched row is updated only when the staged version is not older
    (a late re-run never moves a row back) and some column differs (re-running an hour writes
    nothing); the rest is inserted. Redshift's MERGE takes no condition: it uses `drop_older`
    then `merge`."""
    target = ident(schema, table)
    others = [c for c in columns if c != key]
    names = ", ".join(ident(c) for c in columns)
    values = ", ".join(f"s.{ident(c)}" for c in columns)
    statement = (
        f"MERGE INTO {target} AS t USING {ident(stage)} AS s ON t.{ident(key)} = s.{ident(key)} "
    )
    if others:
        conditions = []
        if version:
            conditions.append(f"s.{ident(version)} >= t.{ident(version)}")
        staged = ", ".join(f"s.{ident(c)}" for c in others)
        held = ", ".join(f"t.{ident(c)}" for c in others)
        conditions.append(f"({staged}) IS DISTINCT FROM ({held})")
        updates = ", ".join(f"{ident(c)} = s.{ident(c)}" for c in others)
        statement += f"WHEN MATCHED AND {' AND '.join(conditions)} THEN UPDATE SET {updates} "
    return statement + f"WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({values})"


def lock_tables(schema: str, tables: list[str], engine: Engine) -> str:
    """Lock the target tables for the MERGE phase, in the given (fixed) order. PostgreSQL: SHARE
    ROW EXCLUSIVE (conflicts with itself and with writers; readers go on); Redshift's LOCK has
    no modes."""
    names = ", ".join(ident(schema, t) for t in tables)
    if engine == "postgres":
        return f"LOCK TABLE {names} IN SHARE ROW EXCLUSIVE MODE"
    return f"LOCK {names}"


def copy_binary(stage: str, columns: list[str]) -> str:
    """COPY the stage's columns, in this order, from binary COPY data (PostgreSQL)."""
    names = ", ".join(ident(c) for c in columns)
    return f"COPY {ident(stage)} ({names}) FROM STDIN (FORMAT binary)"


def _frame_parts(schema: str, table: WarehouseTable, stage: str) -> tuple[list[str], str]:
    """The frame's expressions (key, money in cents with NULL as 0) and its FROM clause: the
    warehouse rows of the staged keys that the staged version reached."""
    key = ident(table.key)
    expressions = [f"t.{key}"] + [f"COALESCE((t.{ident(m)} * 100)::bigint, 0)" for m in table.money]
    join = f"s.{key} = t.{key}"
    if table.version:
        join += f" AND s.{ident(table.version)} >= t.{ident(table.version)}"
    return expressions, f"FROM {ident(schema, table.name)} t JOIN {ident(stage)} s ON {join}"


def frame_rows(schema: str, table: WarehouseTable, stage: str) -> str:
    """The reconciliation frame as rows (Redshift)."""
    expressions, source = _frame_parts(schema, table, stage)
    return f"SELECT {', '.join(expressions)} {source}"


def frame_arrays(schema: str, table: WarehouseTable, stage: str, bucket: int | None) -> str:
    """The reconciliation frame as binary COPY of int8 arrays (PostgreSQL): one row, or with
    `bucket` one row per `bucket` keys (an array value must stay under 1 GB); a few messages
    instead of one per frame row."""
    expressions, source = _frame_parts(schema, table, stage)
    aggregates = ", ".join(f"array_agg({e})" for e in expressions)
    group = f" GROUP BY t.{ident(table.key)} / {int(bucket)}" if bucket else ""
    return f"COPY (SELECT {aggregates} {source}{group}) TO STDOUT (FORMAT binary)"


def redshift_copy(stage: str, s3_uri: str, iam_role_arn: str) -> str:
    """COPY staged Parquet from S3 (Redshift only)."""
    quote = render(sql.Literal(s3_uri))
    role = render(sql.Literal(iam_role_arn))
    return f"COPY {ident(stage)} FROM {quote} IAM_ROLE {role} FORMAT AS PARQUET"


# -- erasure and exclusion (bound parameters: `%s` is the paramstyle of psycopg and of
# redshift_connector alike) ---------------------------------------------------------------------
def existing_tables(count: int) -> str:
    """The names among `count` table names (bound) that exist in a schema (bound first)."""
    names = ", ".join(["%s"] * count)
    return (
        "SELECT table_name FROM information_schema.tables "
        f"WHERE table_schema = %s AND table_name IN ({names})"
    )


def count_matching(schema: str, table: str, column: str) -> str:
    """Count the rows whose `column` equals the bound value."""
    return f"SELECT count(*) FROM {ident(schema, table)} WHERE {ident(column)} = %s"


def delete_matching(schema: str, table: str, column: str) -> str:
    """Delete the rows whose `column` equals the bound value."""
    return f"DELETE FROM {ident(schema, table)} WHERE {ident(column)} = %s"


def null_matching(schema: str, table: str, column: str) -> str:
    """Set `column` to NULL on the rows where it equals the bound value."""
    return f"UPDATE {ident(schema, table)} SET {ident(column)} = NULL WHERE {ident(column)} = %s"


def delete_keys(schema: str, table: str, key: str, count: int) -> str:
    """Delete the rows whose `key` is one of `count` bound values (no array parameters: Redshift
    has no `= ANY(%s)`)."""
    values = ", ".join(["%s"] * count)
    return f"DELETE FROM {ident(schema, table)} WHERE {ident(key)} IN ({values})"

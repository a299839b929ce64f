"""The warehouse SQL of Redshift and PostgreSQL: DDL, staging tables, locks, MERGE, the
reconciliation figures.

Statements are rendered to text from `psycopg.sql` identifiers so that the same text runs on
both engines (redshift_connector takes text); values are bound parameters. Most statements are
common; where the engines differ the function says so: PostgreSQL's MERGE takes a condition on
WHEN MATCHED (`merge_changed`, one statement) where Redshift drops stale staged rows first
(`drop_older` then `merge`), and their LOCK statements differ (`lock_tables`). Which one runs is
decided in `loader.py`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from psycopg import sql

from lifecycle_pipelines.archive.stats import figures_sql
from lifecycle_pipelines.warehouse.model import USER_KEY, USER_KEY_HEX_DIGITS, USER_KEY_WORD_DIGITS

if TYPE_CHECKING:
    from lifecycle_pipelines.warehouse.model import Engine, WarehouseTable


Relation: TypeAlias = tuple[str, ...]  # a table's name, schema-qualified or not


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


def column_types() -> str:
    """(column, catalog type) of a table, in order; parameters: schema, table. The catalog
    query runs on PostgreSQL and Redshift alike."""
    return (
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod)"
        " FROM pg_catalog.pg_attribute a"
        " JOIN pg_catalog.pg_class c ON c.oid = a.attrelid"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY a.attnum"
    )


def add_column(schema: str, table: str, column: str, type_: str) -> str:
    return f"ALTER TABLE {ident(schema, table)} ADD COLUMN {ident(column)} {type_}"


def create_stage(stage: Relation, columns: list[tuple[str, str]], engine: Engine) -> str:
    """A staging table with the load's columns in the load's order, created inside the load's
    transaction and dropped before its commit (`drop_stage`), so a failed load leaves none (the
    loader refuses a connection in autocommit mode). PostgreSQL: UNLOGGED, in the warehouse
    schema under a name of the session's own (parallel workers can scan it, as they cannot a
    temporary table, and its rows write no WAL); Redshift: a temporary table. Not `LIKE` the
    target: Redshift's COPY from Parquet maps columns by position, and a target that gained a
    column at its end no longer has the staged file's order."""
    body = ", ".join(f"{ident(name)} {type_}" for name, type_ in columns)
    kind = "UNLOGGED" if engine == "postgres" else "TEMP"
    return f"CREATE {kind} TABLE {ident(*stage)} ({body})"


def analyze(stage: Relation) -> str:
    """Gather a stage's statistics (PostgreSQL: the MERGE would plan for a guessed size)."""
    return f"ANALYZE {ident(*stage)}"


def drop_stage(stage: Relation) -> str:
    return f"DROP TABLE {ident(*stage)}"


def drop_older(schema: str, table: str, stage: Relation, key: str, version: str) -> str:
    """Drop staged rows older than the warehouse's (a late re-run never moves a row back)."""
    return (
        f"DELETE FROM {ident(*stage)} USING {ident(schema, table)} t "
        f"WHERE {ident(*stage)}.{ident(key)} = t.{ident(key)} "
        f"AND {ident(*stage)}.{ident(version)} < t.{ident(version)}"
    )


def merge(schema: str, table: str, stage: Relation, key: str, columns: list[str]) -> str:
    """MERGE the staged rows into the target: update matches, insert the rest."""
    updates = ", ".join(f"{ident(c)} = s.{ident(c)}" for c in columns if c != key)
    names = ", ".join(ident(c) for c in columns)
    values = ", ".join(f"s.{ident(c)}" for c in columns)
    return (
        f"MERGE INTO {ident(schema, table)} USING {ident(*stage)} s "
        f"ON {ident(schema, table)}.{ident(key)} = s.{ident(key)} "
        f"WHEN MATCHED THEN UPDATE SET {updates} "
        f"WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({values})"
    )


def greatest_key(schema: str, table: str, key: str) -> str:
    """The target's greatest key (PostgreSQL, read under the table lock)."""
    return f"SELECT max({ident(key)}) FROM {ident(schema, table)}"


def insert_new(
    schema: str, table: str, stage: Relation, key: str, columns: list[str], *, above: bool
) -> str:
    """INSERT the staged rows that cannot be in the target (PostgreSQL): with `above`, those
    whose key is above the bound parameter, the target's greatest key read under the table
    lock; without, every staged row (the target was empty). No join, no per-row MERGE action:
    an hour's new orders, whose keys come after every loaded one, take this path."""
    names = ", ".join(ident(c) for c in columns)
    where = f" WHERE {ident(key)} > %s" if above else ""
    return (
        f"INSERT INTO {ident(schema, table)} ({names}) SELECT {names} FROM {ident(*stage)}{where}"
    )


def merge_changed(
    schema: str,
    table: str,
    stage: Relation,
    key: str,
    columns: list[str],
    version: str | None,
    *,
    up_to_key: bool = False,
) -> str:
    """MERGE for PostgreSQL: a matched row is updated only when the staged version is not older
    (a late re-run never moves a row back) and some column differs (re-running an hour writes
    nothing); the rest is inserted. With `up_to_key`, only the staged rows whose key is at most
    the bound parameter (given twice) are merged, and only the target's rows up to it are
    joined: the rows above it went through `insert_new` or straight into the target, and the
    join then reads the range of the target that can match (not a hash of the whole table).
    Redshift's MERGE takes no condition: it uses `drop_older` then `merge`."""
    target = ident(schema, table)
    others = [c for c in columns if c != key]
    names = ", ".join(ident(c) for c in columns)
    values = ", ".join(f"s.{ident(c)}" for c in columns)
    source = ident(*stage)
    on = f"t.{ident(key)} = s.{ident(key)}"
    if up_to_key:
        source = f"(SELECT * FROM {ident(*stage)} WHERE {ident(key)} <= %s)"
        on += f" AND t.{ident(key)} <= %s"
    statement = f"MERGE INTO {target} AS t USING {source} AS s ON {on} "
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


def copy_binary(table: Relation, columns: list[str]) -> str:
    """COPY the columns, in this order, of a stage or a target (`(schema, table)`) from binary
    COPY data (PostgreSQL)."""
    names = ", ".join(ident(c) for c in columns)
    return f"COPY {ident(*table)} ({names}) FROM STDIN (FORMAT binary)"


def key_figure(table: WarehouseTable, engine: Engine) -> str:
    """The integer the figures take of row `t`'s key: the key itself, or for the user key (the
    64 hex digits of an HMAC) the sum of the eight 32-bit numbers its groups of 8 hex digits
    spell, which the source side computes from the HMACs of its own user ids
    (`transform.user_key_numbers`): a change to any digit changes it."""
    key = ident("t", table.key)
    if table.key != USER_KEY.name:
        return key
    width = USER_KEY_WORD_DIGITS
    starts = range(1, USER_KEY_HEX_DIGITS + 1, width)
    if engine == "redshift":
        words = [f"STRTOL(SUBSTRING({key}, {i}, {width}), 16)" for i in starts]
    else:
        words = [f"('x' || substr({key}, {i}, {width}))::bit({4 * width})::bigint" for i in starts]
    return "(" + " + ".join(words) + ")"


def _figure_columns(table: WarehouseTable, engine: Engine) -> str:
    key = sql.SQL(key_figure(table, engine))
    return render(figures_sql(key, list(table.money), alias="t"))


def _staged_reached(table: WarehouseTable, stage: Relation) -> str:
    """The warehouse row `t` is the one of a staged key, and the staged version reached it (a
    newer row already there is not this hour's)."""
    match = f"s.{ident(table.key)} = t.{ident(table.key)}"
    if table.version:
        match += f" AND s.{ident(table.version)} >= t.{ident(table.version)}"
    return f"EXISTS (SELECT 1 FROM {ident(*stage)} s WHERE {match})"


def figures(schema: str, table: WarehouseTable, stage: Relation, engine: Engine) -> str:
    """The warehouse's reconciliation figures of the hour, both engines, one row: count, key
    sum, key checksum (the source's h(k)) and money sums in cents over the warehouse rows of the
    staged keys that the staged version reached. A semi-join: each warehouse row counts once,
    and only the stage's key and version are hashed."""
    return (
        f"SELECT {_figure_columns(table, engine)} FROM {ident(schema, table.name)} t "
        f"WHERE {_staged_reached(table, stage)}"
    )


def superseded_figures(schema: str, table: WarehouseTable, stage: Relation, engine: Engine) -> str:
    """The figures of the staged rows the warehouse already holds in a newer version, from the
    stage (both engines; run before the MERGE, as Redshift's `drop_older` removes them): a
    load of an hour whose snapshot was taken before a row changed again, when the later hour
    committed first. Such rows are rightly not written; with these figures the hour still
    accounts for every source row. Only for a table with a version column."""
    if not table.version:
        raise ValueError(f"{table.name}: no version column")
    key, version = ident(table.key), ident(table.version)
    return (
        f"SELECT {_figure_columns(table, engine)} FROM {ident(*stage)} t WHERE EXISTS "
        f"(SELECT 1 FROM {ident(schema, table.name)} w "
        f"WHERE w.{key} = t.{key} AND w.{version} > t.{version})"
    )


def figures_split(
    schema: str,
    table: WarehouseTable,
    stage: Relation | None,
    *,
    target_was_empty: bool,
    engine: Engine = "postgres",
) -> str:
    """The same figures after rows went into the target without a stage or by `insert_new`
    (PostgreSQL): the warehouse rows above the bound parameter (the greatest key before the
    load; under the table lock only this load can have written them), plus, when some rows were
    staged (`stage`), those at most it that a staged version reached. Parameters: the key, and
    again with a stage. When the target was empty, every warehouse row is this load's (no
    parameter)."""
    target = ident(schema, table.name)
    if target_was_empty:
        return f"SELECT {_figure_columns(table, engine)} FROM {target} t"
    key = ident(table.key)
    above = f"SELECT * FROM {target} WHERE {key} > %s"
    if stage is None:
        return f"SELECT {_figure_columns(table, engine)} FROM ({above}) t"
    return (
        f"SELECT {_figure_columns(table, engine)} FROM ({above} UNION ALL "
        f"SELECT * FROM {target} t WHERE t.{key} <= %s AND {_staged_reached(table, stage)}) t"
    )


def redshift_copy(stage: Relation, s3_uri: str, iam_role_arn: str) -> str:
    """COPY staged Parquet from S3 (Redshift only)."""
    quote = render(sql.Literal(s3_uri))
    role = render(sql.Literal(iam_role_arn))
    return f"COPY {ident(*stage)} FROM {quote} IAM_ROLE {role} FORMAT AS PARQUET"


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


# -- source deletions kept in the warehouse ----------------------------------------------------
DELETIONS_TABLE = "source_deletions"


def create_deletions(schema: str) -> str:
    """The deletions every load has seen (tombstones of hard deletes in the source, and the
    soft deletes of users), kept in the warehouse: a load that commits after a later hour's
    (its snapshot older than a deletion) still finds them and does not bring a row back."""
    return (
        f"CREATE TABLE IF NOT EXISTS {ident(schema, DELETIONS_TABLE)} ("
        "table_name VARCHAR(64) NOT NULL, row_key VARCHAR(64) NOT NULL, "
        "deleted_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (table_name, row_key, deleted_at))"
    )


def forget_deletions(schema: str) -> str:
    """Drop one table's deletions of one hour (parameters: table, start, end): a re-run of the
    hour records them again."""
    return (
        f"DELETE FROM {ident(schema, DELETIONS_TABLE)} "
        "WHERE table_name = %s AND deleted_at >= %s AND deleted_at < %s"
    )


def record_deletions(schema: str, count: int) -> str:
    """`count` deletions in one statement (parameters: table, key as text, deleted_at, for
    each): Redshift runs an executemany as one statement per row."""
    values = ", ".join(["(%s, %s, %s)"] * count)
    return (
        f"INSERT INTO {ident(schema, DELETIONS_TABLE)} (table_name, row_key, deleted_at) "
        f"VALUES {values}"
    )


def delete_deleted_rows(schema: str, table: WarehouseTable, key_type: str) -> str:
    """Delete the rows of `table` that a deletion recorded since the hour's start (parameters:
    table, start) came after: a row whose version is older than the deletion. A row written
    again after it (a key deleted, then inserted again) is newer and stays. Joined on the
    deletion's key cast to the key's own type, so the target's key index finds the rows."""
    target = ident(schema, table.name)
    newer = f" AND {target}.{ident(table.version)} < d.deleted_at" if table.version else ""
    return (
        f"DELETE FROM {target} USING {ident(schema, DELETIONS_TABLE)} d "
        f"WHERE d.table_name = %s AND d.deleted_at >= %s "
        f"AND {target}.{ident(table.key)} = CAST(d.row_key AS {key_type}){newer}"
    )


def forget_old_deletions(schema: str) -> str:
    """Drop the deletions older than the parameter (every load, in its transaction)."""
    return f"DELETE FROM {ident(schema, DELETIONS_TABLE)} WHERE deleted_at < %s"

"""The warehouse SQL shared by Redshift and PostgreSQL: DDL, staging tables and the MERGE.

Statements are rendered to text from `psycopg.sql` identifiers so that the same text runs on
both engines (redshift_connector takes text). Engine differences stay in `loader.py`.
"""

from __future__ import annotations

from psycopg import sql


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

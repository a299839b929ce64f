"""SQL over the archive with DuckDB (locally; Athena over the Glue catalog in production).

Every archived entity becomes a DuckDB view named after its table (`orders`, `order_items`,
`user_activity`, ...) holding the rows of its readable objects, with personal columns decrypted
only for subjects whose key exists. Objects still in Glacier are skipped and reported.

A row that changed after its month was archived is archived again by the month's next round, so
an entity can hold several versions of a key; `<table>_latest` holds each key's newest version
(by `updated_at`, the version column every archived table has).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from lifecycle_pipelines.archive import manifest
from lifecycle_pipelines.archive.crypto import SubjectKeyring
from lifecycle_pipelines.archive.reader import decrypt_table, download, read_parquet, readability
from lifecycle_pipelines.control import ensure_control_schema
from lifecycle_pipelines.resources.postgres import PostgresResource
from lifecycle_pipelines.resources.s3 import S3Resource

VERSION_COLUMN = "updated_at"


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _latest_view(table: str, key: str) -> str:
    """`<table>_latest`: each key's newest version among the archived rows."""
    ranked = (
        f"SELECT *, row_number() OVER (PARTITION BY {_quoted(key)} ORDER BY "
        f"{_quoted(VERSION_COLUMN)} DESC) AS _version_rank FROM {_quoted(table)}"
    )
    return (
        f"CREATE VIEW {_quoted(table + '_latest')} AS SELECT * EXCLUDE (_version_rank) "
        f"FROM ({ranked}) WHERE _version_rank = 1"
    )


@dataclass
class QueryResult:
    """The answer and what it could not see."""

    table: pa.Table
    objects_read: int = 0
    skipped: list[str] = field(default_factory=list)


def _live_objects(conn: Any) -> list[manifest.ObjectEntry]:
    rows = conn.execute(
        "SELECT DISTINCT data_type, partition_month FROM lifecycle.archive_objects"
        " WHERE state IN ('verified', 'purged') ORDER BY 1, 2"
    ).fetchall()
    entries: list[manifest.ObjectEntry] = []
    for data_type, month in rows:
        entries.extend(
            e
            for e in manifest.get_objects(conn, data_type, month)
            if e.state in ("verified", "purged")
        )
    return entries


def query_archive(statement: str, *, s3: S3Resource, control: PostgresResource) -> QueryResult:
    """Run `statement` over every readable archived object."""
    if not s3.sse_kms_key_id:
        raise ValueError("sse_kms_key_id: needed to unwrap subject keys")
    client = s3.client("s3")
    tables: dict[str, list[pa.Table]] = {}
    keys: dict[str, str] = {}  # table -> primary key, from the objects' own metadata
    result = QueryResult(pa.table({}))
    with control.connect(autocommit=True) as conn:
        ensure_control_schema(conn)
        keyring = SubjectKeyring(conn, s3.client("kms"), s3.sse_kms_key_id)
        for entry in _live_objects(conn):
            state = readability(client, entry)
            if not state.readable:
                result.skipped.append(f"s3://{entry.bucket}/{entry.object_key}: {state.reason}")
                continue
            stored = read_parquet(download(client, entry))
            key = (stored.schema.metadata or {}).get(b"lifecycle.primary_key")
            if key:
                keys[entry.table_name] = key.decode()
            table = decrypt_table(stored, keyring)
            tables.setdefault(entry.table_name, []).append(table.replace_schema_metadata(None))
            result.objects_read += 1
    db = duckdb.connect()
    for name, parts in tables.items():
        rows = pa.concat_tables(parts, promote_options="default")
        db.register(name, rows)
        if name in keys and VERSION_COLUMN in rows.column_names:
            db.execute(_latest_view(name, keys[name]))
    try:
        result.table = db.sql(statement).to_arrow_table()
    except duckdb.CatalogException as err:
        raise ValueError(
            f"{err}\nreadable archive tables: {sorted(tables) or 'none'}; "
            f"{len(result.skipped)} objects skipped (archived in Glacier: restore them first)"
        ) from None
    return result

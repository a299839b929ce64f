"""SQL over the archive with DuckDB (locally; Athena over the Glue catalog in production).

Every archived entity becomes a DuckDB view named after its table (`orders`, `order_items`,
`user_activity`, ...) holding the rows of its readable objects, with personal columns decrypted
only for subjects whose key exists. Objects still in Glacier are skipped and reported.
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
    result = QueryResult(pa.table({}))
    with control.connect(autocommit=True) as conn:
        ensure_control_schema(conn)
        keyring = SubjectKeyring(conn, s3.client("kms"), s3.sse_kms_key_id)
        for entry in _live_objects(conn):
            state = readability(client, entry)
            if not state.readable:
                result.skipped.append(f"s3://{entry.bucket}/{entry.object_key}: {state.reason}")
                continue
            table = decrypt_table(read_parquet(download(client, entry)), keyring)
            tables.setdefault(entry.table_name, []).append(table.replace_schema_metadata(None))
            result.objects_read += 1
    db = duckdb.connect()
    for name, parts in tables.items():
        db.register(name, pa.concat_tables(parts, promote_options="default"))
    try:
        result.table = db.sql(statement).to_arrow_table()
    except duckdb.CatalogException as err:
        raise ValueError(
            f"{err}\nreadable archive tables: {sorted(tables) or 'none'}; "
            f"{len(result.skipped)} objects skipped (archived in Glacier: restore them first)"
        ) from None
    return result

"""Purge: delete exactly the archived rows of a verified partition from the source.

The (key, version) pairs of every archived row were written at archive time to a keys object
beside the archive. The purge loads them once into `lifecycle_archive.purge_keys` in the source
database, then deletes in bounded batches of parent keys. Each batch is one transaction that
deletes children then parents, drops the batch's keys and advances `purge_progress`, so a crash
leaves a consistent state and a re-run continues where it stopped.

A parent row is kept (not deleted) when it or one of its children changed after the snapshot
(its version differs), or when it gained a child the archive does not hold. Rows inserted into
the month after the snapshot are never in the keys, so they are never touched. Both are archived
by the month's next round (`MonthArchiver`, re-run on the purged month), whose purge loads its
own keys: the progress row records the round it counts.
"""

from __future__ import annotations

import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from psycopg import sql

from lifecycle_pipelines.archive import manifest
from lifecycle_pipelines.archive.columns import TableShape
from lifecycle_pipelines.archive.manifest import PartitionEntry
from lifecycle_pipelines.archive.month_folders import MonthFolders
from lifecycle_pipelines.archive.plan import ArchiveMonth
from lifecycle_pipelines.archive.scope import check_shapes
from lifecycle_pipelines.control import ensure_control_schema
from lifecycle_pipelines.migrations import apply_migrations
from lifecycle_pipelines.policy import DataTypePolicy
from lifecycle_pipelines.resources.postgres import PostgresResource
from lifecycle_pipelines.resources.s3 import S3Resource

log = logging.getLogger(__name__)

PURGE_SCHEMA = "lifecycle_archive"
MIGRATIONS = Path(__file__).with_name("shop_migrations")


@dataclass
class PurgeProgress:
    """Counts of one partition's purge so far."""

    deleted_rows: int = 0
    kept_rows: int = 0
    batches: int = 0
    remaining_keys: int = 0
    finished: bool = False
    round: int = 0


def ensure_source_schema(conn: psycopg.Connection[Any]) -> None:
    """Create or update the pipelines' schema in the source database (`lifecycle_archive`):
    the purge bookkeeping, and the deletion tombstones with their triggers on the shop tables
    the warehouse loads (the role needs to own those tables, or a DBA applies
    `archive/shop_migrations/` once)."""
    apply_migrations(conn, MIGRATIONS, schema=PURGE_SCHEMA)


def progress(conn: psycopg.Connection[Any], month: ArchiveMonth) -> PurgeProgress | None:
    """The purge progress of a partition (of the round it records), or None if its keys were
    never loaded."""
    row = conn.execute(
        "SELECT deleted_rows, kept_rows, batches, finished_at IS NOT NULL,"
        " (SELECT count(*) FROM lifecycle_archive.purge_keys k"
        "  WHERE k.data_type = p.data_type AND k.partition_month = p.partition_month), round"
        " FROM lifecycle_archive.purge_progress p WHERE data_type = %s AND partition_month = %s",
        (month.data_type, month.month),
    ).fetchone()
    if row is None:
        return None
    return PurgeProgress(row[0], row[1], row[2], row[4], row[3], row[5])


def _check_keys(
    conn: psycopg.Connection[Any], month: ArchiveMonth, verified: dict[str, tuple[int, int]]
) -> None:
    rows = conn.execute(
        "SELECT table_name, count(*), coalesce(sum(pk), 0) FROM lifecycle_archive.purge_keys"
        " WHERE data_type = %s AND partition_month = %s GROUP BY table_name",
        (month.data_type, month.month),
    ).fetchall()
    loaded = {table: (int(count), int(total)) for table, count, total in rows}
    differ = sorted(
        f"{table}: keys {loaded.get(table, (0, 0))}, verified objects {verified.get(table, (0, 0))}"
        for table in set(loaded) | set(verified)
        if loaded.get(table, (0, 0)) != verified.get(table, (0, 0))
    )
    if differ:
        raise PurgeRefused(
            f"{month.label}: the keys to purge disagree with the verified objects (rows, key "
            f"sum): {'; '.join(differ)}; nothing was deleted"
        )


def load_keys(
    conn: psycopg.Connection[Any],
    month: ArchiveMonth,
    partition: PartitionEntry,
    s3: S3Resource,
    verified: dict[str, tuple[int, int]],
) -> int:
    """Load the keys object of the partition's current round into purge_keys (once per round;
    an earlier round's progress is replaced); returns the keys loaded.

    `verified` maps each table to (rows, key sum) of the round's verified objects in the
    manifest: keys that disagree with it (a keys object that lists a row no verified object
    holds) are refused before anything is deleted."""
    forget_earlier_round = (
        "DELETE FROM lifecycle_archive.purge_progress WHERE data_type = %s"
        " AND partition_month = %s AND round < %s"
    )
    ids = (month.data_type, month.month, partition.round)
    if partition.keys_object_key is None or partition.keys_bucket is None:
        with conn.transaction():
            conn.execute(forget_earlier_round, ids)
            conn.execute(
                "INSERT INTO lifecycle_archive.purge_progress (data_type, partition_month,"
                " finished_at, round) VALUES (%s, %s, now(), %s) ON CONFLICT DO NOTHING",
                ids,
            )
        return 0
    loaded = 0
    with tempfile.NamedTemporaryFile(suffix=".parquet") as tmp:
        s3.client("s3").download_file(
            partition.keys_bucket,
            partition.keys_object_key,
            tmp.name,
            ExtraArgs={"VersionId": partition.keys_version_id}
            if partition.keys_version_id
            else None,
        )
        keys = pq.ParquetFile(tmp.name)
        with conn.transaction():
            conn.execute(
                "DELETE FROM lifecycle_archive.purge_keys WHERE data_type = %s"
                " AND partition_month = %s",
                (month.data_type, month.month),
            )
            with conn.cursor().copy(
                "COPY lifecycle_archive.purge_keys (table_name, pk, version, parent_pk,"
                " data_type, partition_month) FROM STDIN (FORMAT csv)"
            ) as copy:
                for batch in keys.iter_batches(batch_size=200_000):
                    table = pa.Table.from_batches([batch]).select(
                        ["table_name", "pk", "version", "parent_pk"]
                    )
                    table = table.append_column(
                        "data_type", pa.array([month.data_type] * batch.num_rows, pa.string())
                    ).append_column(
                        "partition_month", pa.array([month.month] * batch.num_rows, pa.date32())
                    )
                    buffer = io.BytesIO()
                    pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=False))
                    copy.write(buffer.getvalue())
                    loaded += batch.num_rows
            _check_keys(conn, month, verified)
            conn.execute(forget_earlier_round, ids)
            conn.execute(
                "INSERT INTO lifecycle_archive.purge_progress (data_type, partition_month, round)"
                " VALUES (%s, %s, %s)",
                ids,
            )
    return loaded


def _lock_batch_rows(conn: psycopg.Connection[Any], shape: TableShape, batch_column: str) -> None:
    """Lock (FOR UPDATE, in key order) the rows of `shape` whose `batch_column` is a parent key
    of the current batch."""
    conn.execute(
        sql.SQL(
            "SELECT 1 FROM {t} r JOIN purge_batch b ON r.{column} = b.pk"
            " ORDER BY r.{pk} FOR UPDATE OF r"
        ).format(
            t=sql.Identifier(shape.schema, shape.table),
            column=sql.Identifier(batch_column),
            pk=sql.Identifier(shape.primary_key),
        )
    )


def purge_batch(
    conn: psycopg.Connection[Any],
    month: ArchiveMonth,
    parent: TableShape,
    children: list[TableShape],
    batch_size: int,
) -> tuple[int, int, int]:
    """Delete one batch of archived parents with their children, in one transaction.

    Returns (rows deleted, rows kept, parents processed); 0 parents means nothing is left.
    """
    dt, pm = month.data_type, month.month
    with conn.transaction():
        # archived rows leave the source, not the warehouse: no deletion tombstones for them
        conn.execute("SELECT set_config('lifecycle.purge', 'on', true)")
        conn.execute(
            "CREATE TEMP TABLE purge_batch ON COMMIT DROP AS SELECT pk, version"
            " FROM lifecycle_archive.purge_keys WHERE data_type = %s AND partition_month = %s"
            " AND table_name = %s ORDER BY pk LIMIT %s",
            (dt, pm, parent.table, batch_size),
        )
        processed = conn.execute("SELECT count(*) FROM purge_batch").fetchone()
        assert processed is not None
        if processed[0] == 0:
            return 0, 0, 0
        # The batch's rows are locked before anything is compared: a writer that changed one
        # and had not committed yet is waited for, and no change can slip in between the
        # comparison below and the DELETEs (they would delete the new version). Parents first,
        # then children, each in key order, as every batch does.
        _lock_batch_rows(conn, parent, parent.primary_key)
        for child in children:
            assert child.foreign_key is not None
            _lock_batch_rows(conn, child, child.foreign_key)
        # Parents that changed since the snapshot, or whose children did, are kept.
        # (check_shapes refuses tables without a version column)
        conn.execute("CREATE TEMP TABLE purge_keep (pk bigint PRIMARY KEY) ON COMMIT DROP")
        assert parent.version_column is not None
        conn.execute(
            sql.SQL(
                "INSERT INTO purge_keep SELECT b.pk FROM purge_batch b JOIN {t} s"
                " ON s.{pk} = b.pk WHERE s.{v} IS DISTINCT FROM b.version"
                " ON CONFLICT DO NOTHING"
            ).format(
                t=sql.Identifier(parent.schema, parent.table),
                pk=sql.Identifier(parent.primary_key),
                v=sql.Identifier(parent.version_column),
            )
        )
        for child in children:
            assert child.foreign_key is not None and child.version_column is not None
            conn.execute(
                sql.SQL(
                    "INSERT INTO purge_keep SELECT DISTINCT b.pk FROM purge_batch b"
                    " JOIN {c} c ON c.{fk} = b.pk"
                    " LEFT JOIN lifecycle_archive.purge_keys k ON k.data_type = %s"
                    " AND k.partition_month = %s AND k.table_name = %s AND k.pk = c.{cpk}"
                    " WHERE k.pk IS NULL OR c.{v} IS DISTINCT FROM k.version"
                    " ON CONFLICT DO NOTHING"
                ).format(
                    c=sql.Identifier(child.schema, child.table),
                    fk=sql.Identifier(child.foreign_key),
                    cpk=sql.Identifier(child.primary_key),
                    v=sql.Identifier(child.version_column),
                ),
                (dt, pm, child.table),
            )
        deleted = 0
        for child in children:
            assert child.foreign_key is not None
            cur = conn.execute(
                sql.SQL(
                    "DELETE FROM {c} c USING purge_batch b WHERE c.{fk} = b.pk"
                    " AND NOT EXISTS (SELECT 1 FROM purge_keep k WHERE k.pk = b.pk)"
                ).format(
                    c=sql.Identifier(child.schema, child.table),
                    fk=sql.Identifier(child.foreign_key),
                )
            )
            deleted += cur.rowcount
        cur = conn.execute(
            sql.SQL(
                "DELETE FROM {t} s USING purge_batch b WHERE s.{pk} = b.pk"
                " AND NOT EXISTS (SELECT 1 FROM purge_keep k WHERE k.pk = b.pk)"
            ).format(
                t=sql.Identifier(parent.schema, parent.table),
                pk=sql.Identifier(parent.primary_key),
            )
        )
        deleted += cur.rowcount
        kept_row = conn.execute("SELECT count(*) FROM purge_keep").fetchone()
        kept = int(kept_row[0]) if kept_row else 0
        conn.execute(
            "DELETE FROM lifecycle_archive.purge_keys k USING purge_batch b"
            " WHERE k.data_type = %s AND k.partition_month = %s AND k.parent_pk = b.pk",
            (dt, pm),
        )
        conn.execute(
            "UPDATE lifecycle_archive.purge_progress SET deleted_rows = deleted_rows + %s,"
            " kept_rows = kept_rows + %s, batches = batches + 1"
            " WHERE data_type = %s AND partition_month = %s",
            (deleted, kept, dt, pm),
        )
        return deleted, kept, int(processed[0])


def finish(conn: psycopg.Connection[Any], month: ArchiveMonth) -> PurgeProgress:
    """Mark the partition's purge finished; returns its final counts."""
    with conn.transaction():
        conn.execute(
            "UPDATE lifecycle_archive.purge_progress SET finished_at = COALESCE(finished_at, now())"
            " WHERE data_type = %s AND partition_month = %s",
            (month.data_type, month.month),
        )
    result = progress(conn, month)
    assert result is not None
    return result


class PurgeRefused(RuntimeError):
    """The partition is not verified; nothing was deleted."""


def purge_partition(
    *,
    shop: PostgresResource,
    control: PostgresResource,
    s3: S3Resource,
    data_type: str,
    policy: DataTypePolicy,
    month: ArchiveMonth,
    batch_size: int = 5_000,
    logger: logging.Logger | Any = log,
) -> PurgeProgress:
    """Purge a verified partition's archived rows from the source (see the module docstring)."""
    if batch_size <= 0:
        raise ValueError(f"batch_size: must be a positive number of rows, got {batch_size}")
    with control.connect(autocommit=True) as control_conn:
        ensure_control_schema(control_conn)
        manifest.lock_partition(control_conn, data_type, month.month)
        partition = manifest.get_partition(control_conn, data_type, month.month)
        if partition is None or partition.state == "written":
            state = "not archived" if partition is None else "written but not verified"
            raise PurgeRefused(
                f"{month.label} is {state}; the purge deletes only verified partitions, "
                "nothing was deleted"
            )
        if partition.state == "expired":
            raise PurgeRefused(f"{month.label} has expired from the archive; nothing to purge")
        with shop.connect(autocommit=True) as conn:
            ensure_source_schema(conn)
            shapes = check_shapes(conn, data_type, policy)
            # S3 records the round as verified before any of its rows leave the source
            MonthFolders.of(s3, policy, month, shapes, logger).ensure_marker(
                control_conn, partition.round
            )
            current = progress(conn, month)
            if current is None or current.round != partition.round:
                verified: dict[str, tuple[int, int]] = {}
                for entry in manifest.get_objects(control_conn, data_type, month.month):
                    if entry.round != partition.round:  # an earlier round's, purged already
                        continue
                    rows, total = verified.get(entry.table_name, (0, 0))
                    verified[entry.table_name] = (rows + entry.row_count, total + entry.pk_sum)
                loaded = load_keys(conn, month, partition, s3, verified)
                logger.info(f"{month.label}: {loaded} archived keys loaded for the purge")
            while True:
                deleted, kept, parents = purge_batch(conn, month, shapes[0], shapes[1:], batch_size)
                if parents == 0:
                    break
                now = progress(conn, month)
                assert now is not None
                logger.info(
                    f"{month.label}: purge batch {now.batches}: {deleted} rows deleted, "
                    f"{kept} kept; {now.remaining_keys} keys left"
                )
            result = finish(conn, month)
        if partition.state == "verified":
            manifest.mark_purged(
                control_conn, data_type, month.month, result.deleted_rows, result.kept_rows
            )
    return result

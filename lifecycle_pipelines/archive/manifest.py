"""The archive manifest in the control schema: partitions, objects, subject index.

Each state change is one transaction: `record_written` replaces a partition's objects and
subject index together; `mark_verified`, `mark_purged` and `mark_expired` move states forward.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg


@dataclass
class ObjectEntry:
    """One archived object as the manifest records it."""

    table_name: str
    part: int
    bucket: str
    object_key: str
    version_id: str | None
    storage_class: str
    row_count: int
    size_bytes: int
    sha256: str
    pk_min: int | None
    pk_max: int | None
    pk_sum: int
    pk_hash_sum: int
    money_sums: dict[str, str]
    subjects: dict[str, int]
    state: str = "written"
    object_id: int | None = None


@dataclass(frozen=True)
class PartitionEntry:
    """A partition row of the manifest."""

    data_type: str
    partition_month: date
    state: str
    snapshot_at: datetime
    source_rows: int
    keys_bucket: str | None
    keys_object_key: str | None
    keys_version_id: str | None


def get_partition(
    conn: psycopg.Connection[Any], data_type: str, month: date
) -> PartitionEntry | None:
    """The manifest row of a partition, or None."""
    row = conn.execute(
        "SELECT data_type, partition_month, state, snapshot_at, source_rows, keys_bucket,"
        " keys_object_key, keys_version_id FROM lifecycle.archive_partitions"
        " WHERE data_type = %s AND partition_month = %s",
        (data_type, month),
    ).fetchone()
    return None if row is None else PartitionEntry(*row)


def get_objects(conn: psycopg.Connection[Any], data_type: str, month: date) -> list[ObjectEntry]:
    """The objects of a partition, by table and part."""
    rows = conn.execute(
        "SELECT object_id, table_name, part, bucket, object_key, version_id, storage_class,"
        " row_count, size_bytes, sha256, pk_min, pk_max, pk_sum, pk_hash_sum, money_sums, state"
        " FROM lifecycle.archive_objects WHERE data_type = %s AND partition_month = %s"
        " ORDER BY table_name, part",
        (data_type, month),
    ).fetchall()
    return [
        ObjectEntry(
            table_name=r[1],
            part=r[2],
            bucket=r[3],
            object_key=r[4],
            version_id=r[5],
            storage_class=r[6],
            row_count=r[7],
            size_bytes=r[8],
            sha256=r[9],
            pk_min=r[10],
            pk_max=r[11],
            pk_sum=int(r[12]),
            pk_hash_sum=int(r[13]),
            money_sums=r[14],
            subjects={},
            state=r[15],
            object_id=r[0],
        )
        for r in rows
    ]


def record_written(
    conn: psycopg.Connection[Any],
    data_type: str,
    month: date,
    *,
    snapshot_at: datetime,
    run_id: str | None,
    source_rows: int,
    keys: tuple[str, str, str | None] | None,
    objects: Iterable[ObjectEntry],
) -> None:
    """Record a partition as written with exactly `objects` (replacing an earlier attempt).

    Only a partition that is new or still `written` can be recorded again: a verified or purged
    partition's objects are the only copy of purged rows and are never replaced.
    """
    with conn.transaction():
        current = conn.execute(
            "SELECT state FROM lifecycle.archive_partitions"
            " WHERE data_type = %s AND partition_month = %s FOR UPDATE",
            (data_type, month),
        ).fetchone()
        if current is not None and current[0] != "written":
            raise RuntimeError(
                f"{data_type} {month:%Y-%m} is already {current[0]}; its objects are not replaced"
            )
        conn.execute(
            "INSERT INTO lifecycle.archive_partitions (data_type, partition_month, state,"
            " snapshot_at, run_id, source_rows, keys_bucket, keys_object_key, keys_version_id)"
            " VALUES (%s, %s, 'written', %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (data_type, partition_month) DO UPDATE SET state = 'written',"
            " snapshot_at = EXCLUDED.snapshot_at, run_id = EXCLUDED.run_id,"
            " source_rows = EXCLUDED.source_rows, written_at = now(), verified_at = NULL,"
            " keys_bucket = EXCLUDED.keys_bucket, keys_object_key = EXCLUDED.keys_object_key,"
            " keys_version_id = EXCLUDED.keys_version_id",
            (data_type, month, snapshot_at, run_id, source_rows, *(keys or (None, None, None))),
        )
        conn.execute(
            "DELETE FROM lifecycle.archive_objects WHERE data_type = %s AND partition_month = %s",
            (data_type, month),
        )
        for entry in objects:
            row = conn.execute(
                "INSERT INTO lifecycle.archive_objects (data_type, partition_month, table_name,"
                " part, bucket, object_key, version_id, storage_class, row_count, size_bytes,"
                " sha256, pk_min, pk_max, pk_sum, pk_hash_sum, money_sums, state)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                " 'written') RETURNING object_id",
                (
                    data_type,
                    month,
                    entry.table_name,
                    entry.part,
                    entry.bucket,
                    entry.object_key,
                    entry.version_id,
                    entry.storage_class,
                    entry.row_count,
                    entry.size_bytes,
                    entry.sha256,
                    entry.pk_min,
                    entry.pk_max,
                    entry.pk_sum,
                    entry.pk_hash_sum,
                    json.dumps(entry.money_sums),
                ),
            ).fetchone()
            assert row is not None
            entry.object_id = row[0]
            if entry.subjects:
                with conn.cursor().copy(
                    "COPY lifecycle.subject_index (subject_id, object_id, row_count)"
                    " FROM STDIN (FORMAT csv)"
                ) as copy:
                    copy.write(_subject_rows_csv(entry.subjects, entry.object_id))


def _subject_rows_csv(subjects: dict[str, int], object_id: int) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows((subject, object_id, count) for subject, count in subjects.items())
    return buffer.getvalue().encode()


def mark_verified(conn: psycopg.Connection[Any], data_type: str, month: date) -> None:
    """Move a written partition and its objects to verified."""
    with conn.transaction():
        conn.execute(
            "UPDATE lifecycle.archive_objects SET state = 'verified', verified_at = now()"
            " WHERE data_type = %s AND partition_month = %s AND state = 'written'",
            (data_type, month),
        )
        conn.execute(
            "UPDATE lifecycle.archive_partitions SET state = 'verified', verified_at = now()"
            " WHERE data_type = %s AND partition_month = %s AND state = 'written'",
            (data_type, month),
        )


def mark_purged(
    conn: psycopg.Connection[Any], data_type: str, month: date, deleted: int, kept: int
) -> None:
    """Record that the partition's archived rows left the source."""
    with conn.transaction():
        conn.execute(
            "UPDATE lifecycle.archive_objects SET state = 'purged', purged_at = now()"
            " WHERE data_type = %s AND partition_month = %s AND state = 'verified'",
            (data_type, month),
        )
        conn.execute(
            "UPDATE lifecycle.archive_partitions SET state = 'purged', purged_at = now(),"
            " purged_rows = %s, kept_rows = %s"
            " WHERE data_type = %s AND partition_month = %s AND state = 'verified'",
            (deleted, kept, data_type, month),
        )


class PartitionBusy(RuntimeError):
    """Another run holds this partition; this run changed nothing."""


def lock_partition(conn: psycopg.Connection[Any], data_type: str, month: date) -> None:
    """Take the partition's session-level advisory lock, or raise PartitionBusy at once.

    Archive and purge of one partition share the lock, so two runs of the same partition can
    never proceed together; the lock goes with the connection when the run ends or crashes.
    """
    key = f"lifecycle.archive:{data_type}:{month.isoformat()}"
    row = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)).fetchone()
    if not row or not row[0]:
        raise PartitionBusy(
            f"{data_type} {month:%Y-%m}: another run holds this partition; this run changed nothing"
        )

"""The archive manifest in the control schema: partitions, objects, subject index.

Each state change is one transaction: `WrittenPartition` replaces a
partition's (current round's) objects and subject index together; `mark_verified`, `mark_purged` and `mark_expired` move states forward.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from lifecycle_pipelines.control import release_session_lock, try_session_lock


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
    round: int = 0  # the archive round that wrote it (0: the month's first)


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
    round: int = 0  # the current round (later rounds archive rows left after a purge)
    rows_before_round: int = 0  # parent rows archived by the earlier rounds

    @property
    def total_rows(self) -> int:
        """Parent rows archived by every round so far."""
        return self.rows_before_round + self.source_rows


def get_partition(
    conn: psycopg.Connection[Any], data_type: str, month: date
) -> PartitionEntry | None:
    """The manifest row of a partition, or None."""
    row = conn.execute(
        "SELECT data_type, partition_month, state, snapshot_at, source_rows, keys_bucket,"
        " keys_object_key, keys_version_id, round, rows_before_round"
        " FROM lifecycle.archive_partitions"
        " WHERE data_type = %s AND partition_month = %s",
        (data_type, month),
    ).fetchone()
    return None if row is None else PartitionEntry(*row)


def get_objects(conn: psycopg.Connection[Any], data_type: str, month: date) -> list[ObjectEntry]:
    """The objects of a partition, by table and part."""
    rows = conn.execute(
        "SELECT object_id, table_name, part, bucket, object_key, version_id, storage_class,"
        " row_count, size_bytes, sha256, pk_min, pk_max, pk_sum, pk_hash_sum, money_sums, state,"
        " round FROM lifecycle.archive_objects WHERE data_type = %s AND partition_month = %s"
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
            round=r[16],
        )
        for r in rows
    ]


class WrittenPartition:
    """Records a partition as `written` in one transaction of its own connection, built up
    while the partition is extracted: `begin` claims the partition (replacing an earlier
    attempt's objects), `add_object` inserts an object with its subject index as soon as its
    part is closed (the subject index is the costly part, so it is written while the rest of
    the month is still being extracted), and `commit` fills in every object's final figures
    (version, checksum, source sums) and commits. Until then nothing is visible; a failure or
    a crash leaves the manifest as it was.

    Only the current round of a partition that is new or still `written` can be recorded
    again, or a next round begun on a purged partition (`round` one above its current): a
    verified or purged round's objects are the only copy of purged rows and are never replaced.
    """

    def __init__(
        self, conn: psycopg.Connection[Any], data_type: str, month: date, round: int = 0
    ) -> None:
        self.conn = conn
        self.data_type = data_type
        self.month = month
        self.round = round
        self._ids: dict[tuple[str, int], int] = {}

    def begin(self, *, snapshot_at: datetime, run_id: str | None) -> None:
        current = self.conn.execute(
            "SELECT state, round FROM lifecycle.archive_partitions"
            " WHERE data_type = %s AND partition_month = %s FOR UPDATE",
            (self.data_type, self.month),
        ).fetchone()
        state, round_now = (None, 0) if current is None else (str(current[0]), int(current[1]))
        again = state in (None, "written") and round_now == self.round
        following = state == "purged" and self.round == round_now + 1
        if not (again or following):
            raise RuntimeError(
                f"{self.data_type} {self.month:%Y-%m} is {state} at round {round_now}; round "
                f"{self.round} cannot be recorded and no object is replaced"
            )
        self.conn.execute(
            "INSERT INTO lifecycle.archive_partitions (data_type, partition_month, state,"
            " snapshot_at, run_id, source_rows)"
            " VALUES (%s, %s, 'written', %s, %s, 0)"
            " ON CONFLICT (data_type, partition_month) DO UPDATE SET state = 'written',"
            " snapshot_at = EXCLUDED.snapshot_at, run_id = EXCLUDED.run_id,"
            " rows_before_round = archive_partitions.rows_before_round + CASE WHEN %s"
            " THEN archive_partitions.source_rows ELSE 0 END, round = %s,"
            " source_rows = 0, written_at = now(), verified_at = NULL,"
            " keys_bucket = NULL, keys_object_key = NULL, keys_version_id = NULL",
            (self.data_type, self.month, snapshot_at, run_id, following, self.round),
        )
        self.conn.execute(  # an earlier attempt of this round (never an earlier round's)
            "DELETE FROM lifecycle.archive_objects WHERE data_type = %s AND partition_month = %s"
            " AND round = %s",
            (self.data_type, self.month, self.round),
        )

    def add_object(
        self,
        *,
        table_name: str,
        part: int,
        bucket: str,
        object_key: str,
        storage_class: str,
        subjects: dict[str, int],
    ) -> int:
        """Insert an object (its figures come with `commit`) and its subject index."""
        row = self.conn.execute(
            "INSERT INTO lifecycle.archive_objects (data_type, partition_month, table_name,"
            " part, bucket, object_key, storage_class, row_count, size_bytes, sha256, pk_sum,"
            " pk_hash_sum, state, round) VALUES (%s, %s, %s, %s, %s, %s, %s, 0, 0, '', 0, 0,"
            " 'written', %s) RETURNING object_id",
            (
                self.data_type,
                self.month,
                table_name,
                part,
                bucket,
                object_key,
                storage_class,
                self.round,
            ),
        ).fetchone()
        assert row is not None
        object_id = int(row[0])
        self._ids[(table_name, part)] = object_id
        if subjects:
            with self.conn.cursor().copy(
                "COPY lifecycle.subject_index (subject_id, object_id, row_count)"
                " FROM STDIN (FORMAT csv)"
            ) as copy:
                copy.write(_subject_rows_csv(subjects, object_id))
        return object_id

    def finish(
        self,
        *,
        source_rows: int,
        keys: tuple[str, str, str | None] | None,
        objects: Iterable[ObjectEntry],
    ) -> None:
        """Record every object's final figures (objects not added yet are added now) so that
        the partition holds exactly `objects`; `commit` makes it visible."""
        entries = list(objects)
        for entry in entries:
            if (entry.table_name, entry.part) not in self._ids:
                self.add_object(
                    table_name=entry.table_name,
                    part=entry.part,
                    bucket=entry.bucket,
                    object_key=entry.object_key,
                    storage_class=entry.storage_class,
                    subjects=entry.subjects,
                )
        extra = set(self._ids) - {(e.table_name, e.part) for e in entries}
        if extra:
            raise ValueError(f"objects {sorted(extra)} were added but are not being recorded")
        with self.conn.cursor() as cur:
            cur.executemany(
                "UPDATE lifecycle.archive_objects SET version_id = %s, storage_class = %s,"
                " row_count = %s, size_bytes = %s, sha256 = %s, pk_min = %s, pk_max = %s,"
                " pk_sum = %s, pk_hash_sum = %s, money_sums = %s, bucket = %s, object_key = %s"
                " WHERE object_id = %s",
                [
                    (
                        e.version_id,
                        e.storage_class,
                        e.row_count,
                        e.size_bytes,
                        e.sha256,
                        e.pk_min,
                        e.pk_max,
                        e.pk_sum,
                        e.pk_hash_sum,
                        json.dumps(e.money_sums),
                        e.bucket,
                        e.object_key,
                        self._ids[(e.table_name, e.part)],
                    )
                    for e in entries
                ],
            )
        self.conn.execute(
            "UPDATE lifecycle.archive_partitions SET source_rows = %s, keys_bucket = %s,"
            " keys_object_key = %s, keys_version_id = %s"
            " WHERE data_type = %s AND partition_month = %s",
            (source_rows, *(keys or (None, None, None)), self.data_type, self.month),
        )
        for entry in entries:
            entry.object_id = self._ids[(entry.table_name, entry.part)]

    def commit(
        self,
        *,
        source_rows: int,
        keys: tuple[str, str, str | None] | None,
        objects: Iterable[ObjectEntry],
    ) -> None:
        """`finish`, then commit: the partition is `written` with exactly `objects`."""
        self.finish(source_rows=source_rows, keys=keys, objects=objects)
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()
        self._ids.clear()


def _subject_rows_csv(subjects: dict[str, int], object_id: int) -> bytes:
    """COPY CSV rows (subject, object, rows) written by Arrow, in subject order (the primary
    key's order, so that the index receives them in sequence)."""
    ids = pa.array(list(subjects), pa.string())
    order = pc.sort_indices(ids)
    table = pa.table(
        {
            "subject_id": ids.take(order),
            "object_id": pa.array(np.full(len(ids), object_id, dtype=np.int64)),
            "row_count": pa.array(list(subjects.values()), pa.int64()).take(order),
        }
    )
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, write_options=pacsv.WriteOptions(include_header=False))
    return sink.getvalue().to_pybytes()


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
    """Record that the partition's archived rows (of its current round) left the source;
    `deleted` adds to the rows earlier rounds' purges deleted, `kept` is this round's."""
    with conn.transaction():
        conn.execute(
            "UPDATE lifecycle.archive_objects SET state = 'purged', purged_at = now()"
            " WHERE data_type = %s AND partition_month = %s AND state = 'verified'",
            (data_type, month),
        )
        conn.execute(
            "UPDATE lifecycle.archive_partitions SET state = 'purged', purged_at = now(),"
            " purged_rows = COALESCE(purged_rows, 0) + %s, kept_rows = %s"
            " WHERE data_type = %s AND partition_month = %s AND state = 'verified'",
            (deleted, kept, data_type, month),
        )


class PartitionBusy(RuntimeError):
    """Another run holds this partition; this run changed nothing."""


def _partition_lock(data_type: str, month: date) -> str:
    return f"lifecycle.archive:{data_type}:{month.isoformat()}"


def lock_partition(conn: psycopg.Connection[Any], data_type: str, month: date) -> None:
    """Take the partition's session-level advisory lock, or raise PartitionBusy at once.

    Archive and purge of one partition share the lock, so two runs of the same partition can
    never proceed together; the lock goes with the connection when the run ends or crashes.
    """
    if not try_session_lock(conn, _partition_lock(data_type, month)):
        raise PartitionBusy(
            f"{data_type} {month:%Y-%m}: another run holds this partition; this run changed nothing"
        )


def unlock_partition(conn: psycopg.Connection[Any], data_type: str, month: date) -> None:
    """Release the lock `lock_partition` took on this connection (for passes that visit many
    partitions on one connection)."""
    release_session_lock(conn, _partition_lock(data_type, month))


def object_hold(conn: psycopg.Connection[Any], bucket: str, object_key: str) -> int | None:
    """The id of an active legal hold placed on this archive object (`lifecycle erasure hold
    --s3-uri`), if any. A held object is neither expired nor rewritten; its hold's free-text
    reason is not returned (it may name people), only its id."""
    row = conn.execute(
        "SELECT min(hold_id) FROM lifecycle.erasure_holds"
        " WHERE lifted_at IS NULL AND bucket = %s AND object_key = %s",
        (bucket, object_key),
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])

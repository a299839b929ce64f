"""The archive's eraser: crypto-shredding at once, then a Glacier-aware rewrite plan.

Erasing a subject from the archives:
1. Their data key is destroyed (or a tombstone recorded when they never had one): every copy of
   their personal columns, in every object, version and storage class, is unreadable from now on,
   and later archive runs write no personal data for them.
2. Every object the subject index lists for them gets a decision, recorded in
   `lifecycle.erasure_rewrites`:
   - `rewrite_now` when its bytes are readable (a readable storage class, or a restored Glacier
     copy): the object is rewritten without the subject's ciphertext and subject id, the manifest
     takes the new version and digest, and every earlier version is deleted (Object Lock
     permitting: a locked version is kept, counted and stays crypto-shredded);
   - `at_expiry` when the partition's retention ends within the horizon: the expiry deletes it;
   - `with_next_restore` otherwise: rewritten when a restore next makes it readable
     (`rewrite_pending`, run daily and after restore tests), with no restore paid for erasure.
Row counts, key checksums and money sums of a rewritten object do not change: reconciliations
still pass. Nothing here logs a subject id or a value; only object keys and counts.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import logging
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from botocore.exceptions import ClientError

from lifecycle_pipelines.archive.crypto import PERSONAL_COLUMN, SubjectKeyring
from lifecycle_pipelines.archive.expiry import delete_unlocked_versions, expires_on
from lifecycle_pipelines.archive.extract import ROW_GROUP_ROWS, parquet_options
from lifecycle_pipelines.archive.manifest import object_hold
from lifecycle_pipelines.archive.reader import object_readability
from lifecycle_pipelines.erasure.stores import Remaining, StoreResult, Subject
from lifecycle_pipelines.policy import RetentionPolicy
from lifecycle_pipelines.resources.s3 import S3Resource

log = logging.getLogger(__name__)

DEFAULT_EXPIRY_HORIZON = timedelta(days=90)
_MISSING = {"NoSuchKey", "NoSuchVersion", "404"}


@dataclass(frozen=True)
class ListedObject:
    """An archive object the subject index lists for a subject."""

    object_id: int
    data_type: str
    partition_month: date
    bucket: str
    object_key: str
    version_id: str | None
    storage_class: str
    state: str
    rows: int  # rows of the listed subject(s) in the object


@dataclass(frozen=True)
class Rewrite:
    """The outcome of rewriting one object without some subjects (rows erased per subject)."""

    rows_by_subject: dict[str, int]
    versions_deleted: int
    versions_kept: int

    @property
    def rows_rewritten(self) -> int:
        return sum(self.rows_by_subject.values())


def listed_objects(conn: psycopg.Connection[Any], subject_id: str) -> list[ListedObject]:
    """Objects holding rows of the subject. Expired objects no longer exist; objects of a
    month still `written` (not verified) are left out too: the month's re-run replaces them,
    and with the subject's key destroyed it writes their personal columns as NULL (a rewrite
    planned on them would also block that re-run)."""
    rows = conn.execute(
        "SELECT o.object_id, o.data_type, o.partition_month, o.bucket, o.object_key,"
        " o.version_id, o.storage_class, o.state, s.row_count"
        " FROM lifecycle.subject_index s JOIN lifecycle.archive_objects o USING (object_id)"
        " WHERE s.subject_id = %s AND o.state NOT IN ('expired', 'written')"
        " ORDER BY o.object_id",
        (subject_id,),
    ).fetchall()
    return [ListedObject(*row) for row in rows]


def rewrite_object(
    conn: psycopg.Connection[Any], s3: S3Resource, obj: ListedObject, subject_ids: list[str]
) -> Rewrite:
    """Rewrite one readable object without the subjects' ciphertext and subject id, move the
    manifest to the new version, then delete every earlier version that Object Lock allows."""
    client = s3.client("s3")
    args = {"Bucket": obj.bucket, "Key": obj.object_key}
    if obj.version_id:
        args["VersionId"] = obj.version_id
    table = pq.read_table(io.BytesIO(client.get_object(**args)["Body"].read()))
    metadata = table.schema.metadata or {}
    subject_column = metadata.get(b"lifecycle.subject_column", b"").decode()
    rewritten = 0
    by_subject: dict[str, int] = {}
    if subject_column and subject_column in table.column_names:
        subjects = table.column(subject_column)
        wanted = pa.array(subject_ids).cast(subjects.type)
        hit = pc.fill_null(pc.is_in(subjects, value_set=wanted), False)
        rewritten = pc.sum(hit).as_py() or 0
        if rewritten:
            counts = pc.value_counts(pc.filter(subjects, hit)).to_pylist()
            by_subject = {str(c["values"]): int(c["counts"]) for c in counts}
        if rewritten:
            for name in (PERSONAL_COLUMN, subject_column):
                if name not in table.column_names:
                    continue
                index = table.column_names.index(name)
                column = table.column(name)
                nulls = pa.nulls(len(table), column.type)
                table = table.set_column(index, table.field(index), pc.if_else(hit, nulls, column))
    if rewritten:
        buffer = io.BytesIO()
        pq.write_table(
            table, buffer, row_group_size=ROW_GROUP_ROWS, **parquet_options(table.schema)
        )
        body = buffer.getvalue()
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        response = client.put_object(
            Bucket=obj.bucket,
            Key=obj.object_key,
            Body=body,
            StorageClass=obj.storage_class,
            ChecksumAlgorithm="SHA256",
            ContentType="application/vnd.apache.parquet",
            **s3.encryption_args(),
        )
        if response.get("ChecksumSHA256") not in (None, digest):
            raise RuntimeError(f"s3://{obj.bucket}/{obj.object_key}: S3 stored other bytes")
        new_version = response.get("VersionId")
        conn.execute(
            "UPDATE lifecycle.archive_objects SET version_id = %s, sha256 = %s, size_bytes = %s"
            " WHERE object_id = %s",
            (new_version, digest, len(body), obj.object_id),
        )
    else:
        new_version = obj.version_id
    deleted, kept = delete_unlocked_versions(client, obj.bucket, obj.object_key, new_version)
    log.info(
        "rewrote s3://%s/%s: %d rows erased, %d earlier versions deleted, %d kept by object lock",
        obj.bucket,
        obj.object_key,
        rewritten,
        deleted,
        kept,
    )
    return Rewrite(by_subject, deleted, kept)


class ArchiveEraser:
    """Erases a subject from the S3 archives (see the module docstring)."""

    name = "archive"

    def __init__(
        self,
        control: psycopg.Connection[Any],
        s3: S3Resource,
        keyring: SubjectKeyring,
        policy: RetentionPolicy,
        *,
        request_id: int,
        today: date,
        expiry_horizon: timedelta = DEFAULT_EXPIRY_HORIZON,
    ) -> None:
        self.control = control
        self.s3 = s3
        self.keyring = keyring
        self.policy = policy
        self.request_id = request_id
        self.today = today
        self.horizon = expiry_horizon

    def _live_keys(self, subject_id: str) -> int:
        row = self.control.execute(
            "SELECT count(*) FROM lifecycle.subject_keys"
            " WHERE subject_id = %s AND wrapped_key IS NOT NULL",
            (subject_id,),
        ).fetchone()
        return int(row[0]) if row else 0

    def decide(self, obj: ListedObject) -> str:
        """`rewrite_now`, `at_expiry` or `with_next_restore` for one object. An object that a
        restore test is reading waits for the test to finish (`rewrite_pending` then finds it
        still restored): rewriting it would replace the version the test checks."""
        if not _rewrite_waits(self.control, obj) and _readable(self.s3, obj):
            return "rewrite_now"
        data_type = self.policy.data_types.get(obj.data_type)
        due = expires_on(data_type, obj.partition_month) if data_type else None
        if due is not None and due - self.today <= self.horizon:
            return "at_expiry"
        return "with_next_restore"

    def erase(self, subject: Subject, *, dry_run: bool) -> list[StoreResult]:
        """Destroy the subject's key, plan every listed object, rewrite the readable ones."""
        live = self._live_keys(subject.subject_id)
        destroyed = 0 if dry_run else int(self.keyring.destroy(subject.subject_id))
        objects = [  # a dry run changes nothing, the manifest included
            follow_current_version(self.control, self.s3, obj, record=not dry_run)
            for obj in listed_objects(self.control, subject.subject_id)
        ]
        decisions = {obj.object_id: self.decide(obj) for obj in objects}
        rows = sum(obj.rows for obj in objects)
        results = [
            StoreResult(
                "archive.subject_key", live, destroyed, "crypto-shredded: unreadable everywhere"
            )
        ]
        rewritten_objects = rewritten_rows = 0
        if not dry_run:
            record_rewrite_plan(self.control, self.request_id, subject.subject_id, decisions)
            for obj in objects:
                if decisions[obj.object_id] == "rewrite_now":
                    rewritten_rows += finish_rewrite(self.control, self.s3, obj)
                    rewritten_objects += 1
        for decision in ("rewrite_now", "with_next_restore", "at_expiry"):
            chosen = [o for o in objects if decisions[o.object_id] == decision]
            changed = rewritten_objects if decision == "rewrite_now" else 0
            results.append(
                StoreResult(
                    f"archive.objects.{decision}",
                    len(chosen),
                    changed,
                    f"{sum(o.rows for o in chosen)} of the subject's {rows} archived rows",
                )
            )
        if rewritten_rows:
            log.info(
                "archive erasure: %d rows rewritten in %d objects",
                rewritten_rows,
                rewritten_objects,
            )
        return results

    def remaining(self, subject: Subject) -> list[Remaining]:
        """A live key, and rewritten objects still holding the subject, count as remaining.

        Objects waiting for their next restore or their expiry are crypto-shredded: without the
        key their bytes hold nothing readable about the subject, so they do not count.
        """
        pending = self.control.execute(
            "SELECT count(*) FROM lifecycle.erasure_rewrites"
            " WHERE subject_id = %s AND state = 'pending' AND decision = 'rewrite_now'",
            (subject.subject_id,),
        ).fetchone()
        return [
            Remaining("archive.subject_key", self._live_keys(subject.subject_id)),
            Remaining("archive.objects.rewrite_now", int(pending[0]) if pending else 0),
        ]


def record_rewrite_plan(
    conn: psycopg.Connection[Any], request_id: int, subject_id: str, decisions: dict[int, str]
) -> None:
    """Record each object's decision for the request. A plan still pending takes today's
    decision: a `rewrite_now` whose rewrite failed while the object was readable becomes
    `with_next_restore` once the restored copy has expired (else the request would wait for a
    rewrite nothing can do); a finished one is kept."""
    for object_id, decision in decisions.items():
        conn.execute(
            "INSERT INTO lifecycle.erasure_rewrites (request_id, object_id, subject_id,"
            " decision, state) VALUES (%s, %s, %s, %s, 'pending')"
            " ON CONFLICT (request_id, object_id) DO UPDATE SET decision = EXCLUDED.decision"
            " WHERE lifecycle.erasure_rewrites.state = 'pending'",
            (request_id, object_id, subject_id, decision),
        )


def finish_rewrite(conn: psycopg.Connection[Any], s3: S3Resource, obj: ListedObject) -> int:
    """Rewrite an object for every pending request that lists it; mark them done. Returns the
    number of rows erased."""
    subjects = [
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT subject_id FROM lifecycle.erasure_rewrites"
            " WHERE object_id = %s AND state = 'pending'",
            (obj.object_id,),
        )
    ]
    if not subjects:
        return 0
    result = rewrite_object(conn, s3, obj, subjects)
    with conn.transaction():
        for subject in subjects:
            conn.execute(
                "UPDATE lifecycle.erasure_rewrites SET state = 'done', done_at = now(),"
                " rows_rewritten = %s, versions_deleted = %s, versions_kept = %s"
                " WHERE object_id = %s AND subject_id = %s AND state = 'pending'",
                (
                    result.rows_by_subject.get(subject, 0),
                    result.versions_deleted,
                    result.versions_kept,
                    obj.object_id,
                    subject,
                ),
            )
        conn.execute(
            "DELETE FROM lifecycle.subject_index WHERE object_id = %s AND subject_id = ANY(%s)",
            (obj.object_id, subjects),
        )
    return result.rows_rewritten


def rewrite_pending(conn: psycopg.Connection[Any], s3: S3Resource) -> dict[str, int]:
    """Rewrite every pending object that is readable now (a restore made it so) and close the
    plans whose object has expired. Returns counts for metadata."""
    rows = conn.execute(
        "SELECT o.object_id, o.data_type, o.partition_month, o.bucket, o.object_key,"
        " o.version_id, o.storage_class, o.state,"
        " coalesce(sum(s.row_count), 0)::bigint AS subject_rows"
        " FROM lifecycle.erasure_rewrites r JOIN lifecycle.archive_objects o USING (object_id)"
        " LEFT JOIN lifecycle.subject_index s"
        "   ON s.object_id = r.object_id AND s.subject_id = r.subject_id"
        " WHERE r.state = 'pending' GROUP BY o.object_id ORDER BY o.object_id"
    ).fetchall()
    counts = {"rewritten": 0, "rows_erased": 0, "expired": 0, "waiting": 0}
    for row in rows:
        obj = ListedObject(*row)
        if obj.state != "expired":
            obj = follow_current_version(conn, s3, obj)
        if obj.state == "expired":
            conn.execute(
                "UPDATE lifecycle.erasure_rewrites SET state = 'expired', done_at = now()"
                " WHERE object_id = %s AND state = 'pending'",
                (obj.object_id,),
            )
            counts["expired"] += 1
        elif _rewrite_waits(conn, obj):
            counts["waiting"] += 1
        elif _readable(s3, obj):
            counts["rows_erased"] += finish_rewrite(conn, s3, obj)
            counts["rewritten"] += 1
        else:
            counts["waiting"] += 1
    return counts


def _rewrite_waits(conn: psycopg.Connection[Any], obj: ListedObject) -> bool:
    """Whether a readable object must still not be rewritten: a restore test is checking it
    (rewriting replaces the version the test reads), or a legal hold keeps every version."""
    return (
        in_open_restore_test(conn, obj.object_id)
        or object_hold(conn, obj.bucket, obj.object_key) is not None
    )


def in_open_restore_test(conn: psycopg.Connection[Any], object_id: int) -> bool:
    """Whether a restore test still waiting for its restores sampled this object."""
    row = conn.execute(
        "SELECT 1 FROM lifecycle.restore_test_objects t JOIN lifecycle.restore_tests r"
        " USING (test_id) WHERE t.object_id = %s AND r.state = 'requested' LIMIT 1",
        (object_id,),
    ).fetchone()
    return row is not None


def follow_current_version(
    conn: psycopg.Connection[Any], s3: S3Resource, obj: ListedObject, *, record: bool = True
) -> ListedObject:
    """`obj`, or, when the version the manifest records is gone from S3, the key's current
    version, which the manifest then takes when `record` (version, digest, size; logged).

    That happens when the control database was restored from a backup older than an erasure
    rewrite: the rewrite wrote a new version and deleted the ones before it. A rewrite keeps
    every row (only a subject's ciphertext and subject id become NULL), so the manifest's row
    count and figures still hold. A key with no version at all is an error naming it."""
    client = s3.client("s3")
    if obj.version_id is None:
        return obj
    try:
        client.head_object(Bucket=obj.bucket, Key=obj.object_key, VersionId=obj.version_id)
        return obj
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in _MISSING:
            raise
    try:
        head = client.head_object(Bucket=obj.bucket, Key=obj.object_key, ChecksumMode="ENABLED")
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") not in _MISSING:
            raise
        raise LookupError(
            f"s3://{obj.bucket}/{obj.object_key}: listed in the manifest but gone from S3 (the "
            "control database may be older than the archive); nothing was changed"
        ) from error
    if not record:
        return dataclasses.replace(obj, version_id=head.get("VersionId"))
    conn.execute(
        "UPDATE lifecycle.archive_objects SET version_id = %s, sha256 = %s, size_bytes = %s"
        " WHERE object_id = %s",
        (head.get("VersionId"), head.get("ChecksumSHA256"), head.get("ContentLength"),
         obj.object_id),
    )  # fmt: skip
    log.warning(
        "s3://%s/%s: the manifest's version is gone (a control database older than an erasure "
        "rewrite); the manifest now follows the current version",
        obj.bucket,
        obj.object_key,
    )
    return dataclasses.replace(obj, version_id=head.get("VersionId"))


def _readable(s3: S3Resource, obj: ListedObject) -> bool:
    return object_readability(s3.client("s3"), obj.bucket, obj.object_key, obj.version_id).readable

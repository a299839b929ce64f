"""Legal holds on erasure: a hold on a subject, or on an archive object, defers hard deletion.

A hold on an object covers every subject the object lists: destroying such a subject's key would
change what the held object can prove, so their hard delete waits as a whole. Lifting a hold lets
the next daily sweep resume. Holds are recorded with who placed them and why, never deleted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import psycopg

from lifecycle_pipelines.erasure.requests import ErasureRequestError, validate

_S3_URI = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(.+)$")


@dataclass(frozen=True)
class Hold:
    """An active hold as the sweep reports it (the reason is the hold's own text)."""

    hold_id: int
    scope: str
    reason: str


def place_hold(
    control: psycopg.Connection[Any],
    *,
    placed_by: str,
    reason: str,
    user_id: str | None = None,
    s3_uri: str | None = None,
) -> int:
    """Record a hold on a subject (`user_id`) or an archive object (`s3_uri`); returns its id.

    ErasureRequestError names the bad field; nothing is recorded then."""
    if (user_id is None) == (s3_uri is None):
        raise ErasureRequestError("user_id / s3_uri: give exactly one of them")
    subject = None
    bucket = key = None
    if user_id is not None:
        subject, placed_by = validate(user_id, placed_by)
    else:
        _, placed_by = validate("1", placed_by)
        match = _S3_URI.match((s3_uri or "").strip())
        if not match:
            raise ErasureRequestError(f"s3_uri: expected s3://bucket/key, got {s3_uri!r}")
        bucket, key = match[1], match[2]
        known = control.execute(
            "SELECT 1 FROM lifecycle.archive_objects WHERE bucket = %s AND object_key = %s",
            (bucket, key),
        ).fetchone()
        if known is None:
            raise ErasureRequestError(f"s3_uri: {s3_uri} is not an object of the archive manifest")
    text = reason.strip()
    if not 3 <= len(text) <= 500:
        raise ErasureRequestError("reason: give the reason for the hold (3-500 characters)")
    row = control.execute(
        "INSERT INTO lifecycle.erasure_holds (subject_id, bucket, object_key, reason, placed_by)"
        " VALUES (%s, %s, %s, %s, %s) RETURNING hold_id",
        (subject, bucket, key, text, placed_by),
    ).fetchone()
    assert row is not None
    return int(row[0])


def lift_hold(control: psycopg.Connection[Any], hold_id: int, lifted_by: str) -> bool:
    """Lift an active hold; False when there is no such active hold."""
    _, lifted_by = validate("1", lifted_by)
    cur = control.execute(
        "UPDATE lifecycle.erasure_holds SET lifted_at = now(), lifted_by = %s"
        " WHERE hold_id = %s AND lifted_at IS NULL",
        (lifted_by, hold_id),
    )
    return cur.rowcount == 1


def active_holds(control: psycopg.Connection[Any], subject_id: str) -> list[Hold]:
    """Active holds deferring this subject's hard delete: on the subject, or on an object that
    lists the subject."""
    rows = control.execute(
        "SELECT hold_id, 'subject', reason FROM lifecycle.erasure_holds"
        " WHERE lifted_at IS NULL AND subject_id = %s"
        " UNION ALL"
        " SELECT h.hold_id, 's3://' || h.bucket || '/' || h.object_key, h.reason"
        " FROM lifecycle.erasure_holds h"
        " JOIN lifecycle.archive_objects o ON o.bucket = h.bucket AND o.object_key = h.object_key"
        " JOIN lifecycle.subject_index s ON s.object_id = o.object_id"
        " WHERE h.lifted_at IS NULL AND s.subject_id = %s ORDER BY 1",
        (subject_id, subject_id),
    ).fetchall()
    return [Hold(int(r[0]), r[1], r[2]) for r in rows]

"""Certificates the control database lost are recorded again, so the replay erases their
subjects again.

A control database restored from a backup forgets the requests certified since the backup,
and with them the destroyed subject keys, while their certificates stay in S3 under Object Lock
(`certificate.chain_prefix`: the database's own id, which the restore keeps).
`recover_certificates` reads the certificates after the database's last one, in chain order
(each must name its predecessor's SHA-256, starting at the database's last; otherwise nothing
is recorded), finds each subject by pseudonym among the user ids the stores know, and records
in one transaction:

- the request as the certificate says it ended (`hard_deleted`, or `no_data_found`): the
  restored row itself when it is there at an earlier state (same id, its subject's pseudonym
  the certificate's, a real request: not a dry run, not merged), else a new row under the
  certificate's request id, or under a new id when another request has that one now;
- a ledger entry `recovered from certificate` (sequence and ids only);
- the certificate's row, so that the chain goes on from S3's end (`certificate.issue` refuses to
  fork it before this has run).

The ledger replay that follows runs every hard-deleted request's erasers again, these included.
A certificate whose subject no store knows any more is recorded with an empty subject id:
nothing of theirs can be found by id, and the replay passes over it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import psycopg

from lifecycle_pipelines.erasure.certificate import (
    chain_prefix,
    instant,
    parse_key,
    retain_until_of,
    stored_keys,
)
from lifecycle_pipelines.erasure.stores import pseudonym
from lifecycle_pipelines.resources.s3 import S3Resource

RECOVERED_ACTION = "recovered from certificate"
NO_DATA_FOUND = "no data found"  # a certificate's outcome for a subject the shop never knew
RECOVERED_BY = "certificate-recovery"


class ChainBroken(RuntimeError):
    """A certificate after the database's last does not continue the chain; nothing was
    recorded."""


@dataclass(frozen=True)
class RecoveredCertificate:
    """One certificate recorded again, and the request recorded for it."""

    sequence: int
    request_id: int
    certified_request_id: int
    subject_found: bool


def recover_certificates(
    control: psycopg.Connection[Any],
    s3: S3Resource,
    *,
    known_subjects: Callable[[], Iterable[str]],
    pseudonym_key: bytes,
) -> list[RecoveredCertificate]:
    """Record again the certificates S3 holds after the database's last (see the module
    docstring). `known_subjects` lists the user ids the stores know; it is only called when
    there is something to recover. `control` must be in autocommit mode."""
    client = s3.client("s3")
    bucket = s3.bucket("archive")
    prefix = chain_prefix(control)
    recovered: list[RecoveredCertificate] = []
    with control.transaction():
        control.execute("SELECT pg_advisory_xact_lock(hashtextextended('lifecycle.cert', 0))")
        last = control.execute(
            "SELECT sequence, sha256 FROM lifecycle.erasure_certificates"
            " ORDER BY sequence DESC LIMIT 1"
        ).fetchone()
        sequence, previous = (0, None) if last is None else (int(last[0]), str(last[1]))
        keys = stored_keys(client, bucket, prefix, after=f"{prefix}{sequence:010d}-~")
        if not keys:
            return []
        subjects = {pseudonym(s, pseudonym_key): s for s in known_subjects()}
        for key in keys:
            parsed = parse_key(prefix, key)
            assert parsed is not None  # stored_keys lists certificate keys only
            stored = client.get_object(Bucket=bucket, Key=key)
            body = stored["Body"].read()
            document = json.loads(body)
            if (
                parsed[0] != sequence + 1
                or document.get("sequence") != parsed[0]
                or document.get("previous_sha256") != previous
                or document.get("request_id") != parsed[1]
            ):
                raise ChainBroken(
                    f"s3://{bucket}/{key}: does not continue the chain after certificate "
                    f"{sequence}; nothing was recorded"
                )
            subject = subjects.get(str(document.get("subject_pseudonym")), "")
            request_id = _record_request(control, parsed[1], subject, document, pseudonym_key)
            control.execute(
                "INSERT INTO lifecycle.erasure_ledger (request_id, store, action, detail)"
                " VALUES (%s, 'certificates', %s, %s)",
                (
                    request_id,
                    RECOVERED_ACTION,
                    json.dumps(
                        {
                            "sequence": parsed[0],
                            "certified_request_id": parsed[1],
                            "subject_found": bool(subject),
                        }
                    ),
                ),
            )
            digest = hashlib.sha256(body).hexdigest()
            control.execute(
                "INSERT INTO lifecycle.erasure_certificates (sequence, request_id, sha256,"
                " previous_sha256, bucket, object_key, version_id, retain_until)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (parsed[0], request_id, digest, previous, bucket, key, stored.get("VersionId"),
                 stored.get("ObjectLockRetainUntilDate") or retain_until_of(document)),
            )  # fmt: skip
            recovered.append(RecoveredCertificate(parsed[0], request_id, parsed[1], bool(subject)))
            sequence, previous = parsed[0], digest
        control.execute(  # past every recovered id; never back (a submit may be running)
            "SELECT setval(s, greatest((SELECT max(request_id) FROM lifecycle.erasure_requests),"
            " coalesce(pg_sequence_last_value(s::regclass), 1)))"
            " FROM (SELECT pg_get_serial_sequence('lifecycle.erasure_requests', 'request_id')) q(s)"
        )
    return recovered


def _record_request(
    control: psycopg.Connection[Any],
    certified_id: int,
    subject: str,
    document: dict[str, Any],
    pseudonym_key: bytes,
) -> int:
    """The request row a recovered certificate belongs to (see the module docstring)."""
    completed = instant(document.get("completed_at"))
    state = "no_data_found" if document.get("outcome") == NO_DATA_FOUND else "hard_deleted"
    hard_deleted_at = completed if state == "hard_deleted" else None
    row = control.execute(
        "SELECT subject_id, dry_run, merged_into FROM lifecycle.erasure_requests"
        " WHERE request_id = %s",
        (certified_id,),
    ).fetchone()
    if (
        row is not None
        and not row[1]
        and row[2] is None
        and pseudonym(str(row[0]), pseudonym_key) == document.get("subject_pseudonym")
    ):
        control.execute(
            "UPDATE lifecycle.erasure_requests SET state = %s, hard_deleted_at = %s,"
            " hold_reason = NULL, updated_at = now() WHERE request_id = %s",
            (state, hard_deleted_at, certified_id),
        )
        return certified_id
    values = (
        subject,
        RECOVERED_BY,
        state,
        instant(document.get("received_at")) or completed,
        instant(document.get("soft_deleted_at")),
        hard_deleted_at,
    )
    columns = "subject_id, requested_by, state, received_at, soft_deleted_at, hard_deleted_at"
    if row is None:
        inserted = control.execute(
            f"INSERT INTO lifecycle.erasure_requests (request_id, {columns})"
            " OVERRIDING SYSTEM VALUE VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING request_id",
            (certified_id, *values),
        ).fetchone()
    else:  # the id is another request's now (received after the restore, or a dry run)
        inserted = control.execute(
            f"INSERT INTO lifecycle.erasure_requests ({columns})"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING request_id",
            values,
        ).fetchone()
    assert inserted is not None
    return int(inserted[0])

"""Erasure certificates: one JSON document per request, hash-chained, kept under Object Lock.

A certificate names the subject only by pseudonym (HMAC of the user id), lists per store what
the ledger recorded (found before, removed or masked) and what the verification found after, and
carries the SHA-256 of the previous certificate, so that removing or altering one breaks the
chain (`verify_chain`). It is stored in the archive bucket under
`erasure/certificates/<installation id>/` (the control database's own id, kept by a restore)
with an Object Lock retention, and recorded in `lifecycle.erasure_certificates`.

S3 therefore holds the chain even when the control database loses its end (a restore from a
backup, a removed row): `verify_chain` reports such certificates, `issue` refuses to fork the
chain past them (`ChainAhead`), and `erasure/recovery.py` records them again so that the ledger
replay erases their subjects again.

The document is built from the ledger alone, so a re-run after a crash writes the same bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from botocore.exceptions import ClientError

from lifecycle_pipelines.erasure.stores import Remaining
from lifecycle_pipelines.resources.s3 import S3Resource

CERTIFICATE_PREFIX = "erasure/certificates/"
CERTIFICATE_VERSION = 1
DEFAULT_RETENTION = timedelta(days=7 * 366)
_MISSING = {"NoSuchKey", "NoSuchVersion", "404"}
_KEY = re.compile(r"(\d{10})-request-(\d+)\.json")


class ChainAhead(RuntimeError):
    """S3 holds certificates of this control database that the database has no record of (it
    was restored from a backup, or rows were removed); nothing was issued."""


def chain_prefix(control: psycopg.Connection[Any]) -> str:
    """Where this control database's certificates are stored in the archive bucket."""
    row = control.execute("SELECT installation_id FROM lifecycle.installation").fetchone()
    if row is None:
        raise LookupError("lifecycle.installation is empty: apply the control-schema migrations")
    return f"{CERTIFICATE_PREFIX}{row[0]}/"


def certificate_key(prefix: str, sequence: int, request_id: int) -> str:
    return f"{prefix}{sequence:010d}-request-{request_id}.json"


def parse_key(prefix: str, key: str) -> tuple[int, int] | None:
    """(sequence, request id) of a certificate key under `prefix`, or None."""
    match = _KEY.fullmatch(key.removeprefix(prefix)) if key.startswith(prefix) else None
    return None if match is None else (int(match[1]), int(match[2]))


def stored_keys(client: Any, bucket: str, prefix: str, after: str | None = None) -> list[str]:
    """The current certificate keys under `prefix` (sorted, so in sequence order), those after
    `after` only when given."""
    keys: list[str] = []
    args: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
    if after:
        args["StartAfter"] = after
    for page in client.get_paginator("list_objects_v2").paginate(**args):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return sorted(k for k in keys if parse_key(prefix, k) is not None)


@dataclass(frozen=True)
class Certificate:
    """A recorded certificate."""

    sequence: int
    request_id: int
    sha256: str
    previous_sha256: str | None
    bucket: str
    object_key: str
    version_id: str | None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.object_key}"


def ledger_stores(control: psycopg.Connection[Any], request_id: int) -> list[dict[str, Any]]:
    """Per store and phase: found before (first run) and changed (all runs), from the ledger."""
    rows = control.execute(
        "SELECT store, action, detail FROM lifecycle.erasure_ledger"
        " WHERE request_id = %s AND action IN ('soft delete', 'hard delete')"
        " ORDER BY entry_id",
        (request_id,),
    ).fetchall()
    stores: dict[tuple[str, str], dict[str, Any]] = {}
    for store, action, detail in rows:
        entry = stores.setdefault(
            (action, store),
            {
                "phase": action,
                "store": store,
                "found": int(detail.get("found", 0)),
                "changed": 0,
                "note": detail.get("note", ""),
            },
        )
        entry["changed"] += int(detail.get("changed", 0))
    return list(stores.values())


def certificate_document(
    control: psycopg.Connection[Any],
    request_id: int,
    *,
    subject_pseudonym: str,
    outcome: str,
    remaining: list[Remaining],
) -> dict[str, Any]:
    """The certificate's content without its chain fields."""
    request = control.execute(
        "SELECT received_at, soft_deleted_at, dry_run FROM lifecycle.erasure_requests"
        " WHERE request_id = %s",
        (request_id,),
    ).fetchone()
    if request is None:
        raise LookupError(f"request_id: no erasure request {request_id}")
    last = control.execute(
        "SELECT max(recorded_at) FROM lifecycle.erasure_ledger WHERE request_id = %s",
        (request_id,),
    ).fetchone()
    return {
        "certificate_version": CERTIFICATE_VERSION,
        "request_id": request_id,
        "subject_pseudonym": subject_pseudonym,
        "outcome": outcome,
        "received_at": _iso(request[0]),
        "soft_deleted_at": _iso(request[1]),
        "completed_at": _iso(last[0] if last else None),
        "stores": ledger_stores(control, request_id),
        "verification": [
            {"store": r.store, "remaining": r.count, "note": r.note} for r in remaining
        ],
    }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def canonical(document: dict[str, Any]) -> bytes:
    """The exact bytes stored and hashed."""
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def issue(
    control: psycopg.Connection[Any],
    s3: S3Resource,
    request_id: int,
    document: dict[str, Any],
    *,
    retention: timedelta = DEFAULT_RETENTION,
    lock_mode: str = "COMPLIANCE",
) -> Certificate:
    """Chain, store under Object Lock and record the certificate; returns the existing one when
    the request already has a certificate."""
    bucket = s3.bucket("archive")
    with control.transaction():
        control.execute("SELECT pg_advisory_xact_lock(hashtextextended('lifecycle.cert', 0))")
        existing = get(control, request_id)
        if existing is not None:
            return existing
        last = control.execute(
            "SELECT sequence, sha256 FROM lifecycle.erasure_certificates"
            " ORDER BY sequence DESC LIMIT 1"
        ).fetchone()
        sequence = 1 if last is None else int(last[0]) + 1
        previous = None if last is None else str(last[1])
        body = canonical({**document, "sequence": sequence, "previous_sha256": previous})
        digest = hashlib.sha256(body).hexdigest()
        prefix = chain_prefix(control)
        key = certificate_key(prefix, sequence, request_id)
        # S3 may hold the chain beyond the database's end (a restore, a removed row): issuing
        # now would fork it. This request's own certificate at this place in the chain may be
        # there already (a crash between the upload and the row's commit, or a control
        # database restored from before it): it is recorded as it is, not written again.
        client = s3.client("s3")
        ahead = stored_keys(client, bucket, prefix, after=f"{prefix}{sequence:010d}")
        if ahead == [key]:
            stored = client.get_object(Bucket=bucket, Key=key)
            stored_body = stored["Body"].read()
            if _same_request(json.loads(stored_body), document, previous):
                return _record(
                    control, sequence, request_id, hashlib.sha256(stored_body).hexdigest(),
                    previous, bucket, key, stored.get("VersionId"),
                    stored.get("ObjectLockRetainUntilDate") or retain_until_of(document, retention),
                )  # fmt: skip
        if ahead:
            raise ChainAhead(
                f"s3://{bucket}/{ahead[0]} and {len(ahead) - 1} more: certificates this control "
                f"database has no record of (its last is {sequence - 1}): it was restored from a "
                "backup or rows were removed. Nothing was issued; run `lifecycle erasure replay` "
                "(or materialize erasure_ledger_replay) to record them again and erase their "
                "subjects again, then re-run this request"
            )
        retain_until = retain_until_of(document, retention)
        response = s3.put_bytes(
            bucket,
            key,
            body,
            content_type="application/json",
            extra={
                "ObjectLockMode": lock_mode,
                "ObjectLockRetainUntilDate": retain_until,
                "ChecksumAlgorithm": "SHA256",
            },
        )
        stored = response.get("ChecksumSHA256")
        if stored and stored != base64.b64encode(bytes.fromhex(digest)).decode():
            raise RuntimeError(f"s3://{bucket}/{key}: S3 stored other bytes than the certificate")
        return _record(
            control, sequence, request_id, digest, previous, bucket, key,
            response.get("VersionId"), retain_until,
        )  # fmt: skip


def _same_request(stored: dict[str, Any], document: dict[str, Any], previous: str | None) -> bool:
    """Whether a stored certificate is this request's, at this place in the chain: same
    request, subject and receipt (a request received after a restore may reuse the id of one
    the restore forgot), linked to the database's last certificate."""
    return (
        stored.get("previous_sha256") == previous
        and all(stored.get(f) == document.get(f) for f in ("request_id", "subject_pseudonym"))
        and instant(stored.get("received_at")) == instant(document.get("received_at"))
    )


def instant(text: Any) -> datetime | None:
    """A certificate's ISO timestamp as an instant (None when absent); the session's time zone
    that rendered it may differ between runs."""
    return datetime.fromisoformat(text) if isinstance(text, str) else None


def retain_until_of(document: dict[str, Any], retention: timedelta = DEFAULT_RETENTION) -> datetime:
    """The end of a certificate's Object Lock retention: `retention` after its completion."""
    return datetime.fromisoformat(document["completed_at"]) + retention


def _record(
    control: psycopg.Connection[Any],
    sequence: int,
    request_id: int,
    digest: str,
    previous: str | None,
    bucket: str,
    key: str,
    version_id: str | None,
    retain_until: datetime,
) -> Certificate:
    """Record a stored certificate in `lifecycle.erasure_certificates` (inside the caller's
    transaction, under the chain's lock)."""
    control.execute(
        "INSERT INTO lifecycle.erasure_certificates (sequence, request_id, sha256,"
        " previous_sha256, bucket, object_key, version_id, retain_until)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        (sequence, request_id, digest, previous, bucket, key, version_id, retain_until),
    )
    return Certificate(sequence, request_id, digest, previous, bucket, key, version_id)


def get(control: psycopg.Connection[Any], request_id: int) -> Certificate | None:
    """The certificate of a request, or None."""
    row = control.execute(
        "SELECT sequence, request_id, sha256, previous_sha256, bucket, object_key, version_id"
        " FROM lifecycle.erasure_certificates WHERE request_id = %s",
        (request_id,),
    ).fetchone()
    return None if row is None else Certificate(*row)


def verify_chain(control: psycopg.Connection[Any], s3: S3Resource) -> list[str]:
    """Problems in the chain: a stored certificate whose bytes, hash or link do not match, or
    that is missing from S3; a hard-deleted request without a certificate; a certificate S3
    holds under this database's prefix that the database has no record of (a removed row, or
    a database restored from a backup)."""
    problems: list[str] = []
    previous: str | None = None
    client = s3.client("s3")
    rows = control.execute(
        "SELECT sequence, request_id, sha256, previous_sha256, bucket, object_key, version_id"
        " FROM lifecycle.erasure_certificates ORDER BY sequence"
    ).fetchall()
    prefix, bucket = chain_prefix(control), s3.bucket("archive")
    recorded = {str(row[5]) for row in rows}
    for key in stored_keys(client, bucket, prefix):
        if key not in recorded:
            problems.append(
                f"s3://{bucket}/{key}: a certificate the control database has no record of (a "
                "removed row, or the database was restored from a backup): `lifecycle erasure "
                "replay` records it again and erases its subject again"
            )
    for (request_id,) in control.execute(
        "SELECT r.request_id FROM lifecycle.erasure_requests r WHERE r.state = 'hard_deleted'"
        " AND NOT r.dry_run AND r.merged_into IS NULL AND NOT EXISTS ("
        " SELECT 1 FROM lifecycle.erasure_certificates c WHERE c.request_id = r.request_id)"
        " ORDER BY r.request_id"
    ).fetchall():
        problems.append(f"request {request_id}: hard-deleted but without a certificate")
    for row in rows:
        cert = Certificate(*row)
        args = {"Bucket": cert.bucket, "Key": cert.object_key}
        if cert.version_id:
            args["VersionId"] = cert.version_id
        try:
            body = client.get_object(**args)["Body"].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in _MISSING:
                raise
            problems.append(f"certificate {cert.sequence}: missing from S3 ({cert.uri})")
            previous = cert.sha256
            continue
        document = json.loads(body)
        if hashlib.sha256(body).hexdigest() != cert.sha256:
            problems.append(f"certificate {cert.sequence}: stored bytes do not match its SHA-256")
        if document.get("previous_sha256") != previous or cert.previous_sha256 != previous:
            problems.append(f"certificate {cert.sequence}: does not link to its predecessor")
        previous = cert.sha256
    return problems

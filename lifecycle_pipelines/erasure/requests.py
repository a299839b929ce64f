"""Erasure request intake: validate, merge duplicates, record, report status.

A request names a data subject (the shop's user id) and who asked. Bad input is refused with
the field named and nothing recorded. A second request for a subject with an open request is
merged into it (recorded with `merged_into`, answered with the open request's id). A subject the
shop does not know is recorded and completed at once as `no_data_found`. A dry run is recorded
apart and never merges with real requests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

_USER_ID = re.compile(r"[0-9]{1,18}")  # within bigint
_REQUESTER = re.compile(r"^[\w.+-]+@[\w-]+(\.[\w-]+)+$|^[a-z][a-z0-9_.-]{2,63}$")

_SELECT = (
    "SELECT request_id, subject_id, requested_by, dry_run, state, received_at, merged_into,"
    " soft_deleted_at, hard_deleted_at, hold_reason FROM lifecycle.erasure_requests"
)


class ErasureRequestError(ValueError):
    """The request is malformed; the message names the field. Nothing was recorded."""


@dataclass(frozen=True)
class ErasureRequest:
    """A recorded request as `status` reports it."""

    request_id: int
    subject_id: str
    requested_by: str
    dry_run: bool
    state: str
    received_at: datetime
    merged_into: int | None
    soft_deleted_at: datetime | None = None
    hard_deleted_at: datetime | None = None
    hold_reason: str | None = None


def validate(user_id: str, requested_by: str) -> tuple[str, str]:
    """The normalised (subject id, requester); ErasureRequestError names a bad field."""
    # The rejected value is never echoed: it may be personal data typed into the wrong field.
    subject = user_id.strip()
    if not _USER_ID.fullmatch(subject) or int(subject) <= 0:
        raise ErasureRequestError(
            "user_id: expected a positive integer user id (ASCII digits only)"
        )
    requester = requested_by.strip()
    if not _REQUESTER.match(requester):
        raise ErasureRequestError(
            "requested_by: expected an e-mail address or a lower-case account name "
            "(3-64 characters)"
        )
    return str(int(subject)), requester


def submit(
    control: psycopg.Connection[Any],
    shop: psycopg.Connection[Any],
    user_id: str,
    requested_by: str,
    *,
    dry_run: bool = False,
) -> ErasureRequest:
    """Record a request (or merge it into the subject's open one); returns the request to follow."""
    subject, requester = validate(user_id, requested_by)
    known = shop.execute("SELECT 1 FROM users WHERE user_id = %s", (int(subject),)).fetchone()
    with control.transaction():
        control.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('lifecycle.erasure:' || %s, 0))",
            (subject,),
        )
        open_request = None
        if not dry_run:
            open_request = control.execute(
                "SELECT request_id FROM lifecycle.erasure_requests WHERE subject_id = %s"
                " AND merged_into IS NULL AND NOT dry_run"
                " AND state IN ('received', 'soft_deleted', 'held')",
                (subject,),
            ).fetchone()
        state = "received" if known else "no_data_found"
        row = control.execute(
            "INSERT INTO lifecycle.erasure_requests (subject_id, requested_by, dry_run, state,"
            " merged_into) VALUES (%s, %s, %s, %s, %s) RETURNING request_id",
            (
                subject,
                requester,
                dry_run,
                "received" if open_request else state,
                open_request[0] if open_request else None,
            ),
        ).fetchone()
        assert row is not None
        target = open_request[0] if open_request else row[0]
        action = (
            "merged" if open_request else ("completed: no data found" if not known else "received")
        )
        control.execute(
            "INSERT INTO lifecycle.erasure_ledger (request_id, store, action) VALUES (%s, %s, %s)",
            (row[0], "intake", action),
        )
    found = status(control, target)
    assert found is not None
    return found


def status(control: psycopg.Connection[Any], request_id: int) -> ErasureRequest | None:
    """A request by id, or None."""
    row = control.execute(
        _SELECT + " WHERE request_id = %s",
        (request_id,),
    ).fetchone()
    return None if row is None else ErasureRequest(*row)


def recent(control: psycopg.Connection[Any], limit: int = 20) -> list[ErasureRequest]:
    """The latest requests, newest first."""
    rows = control.execute(
        _SELECT + " ORDER BY request_id DESC LIMIT %s",
        (limit,),
    ).fetchall()
    return [ErasureRequest(*r) for r in rows]

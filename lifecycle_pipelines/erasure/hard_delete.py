"""Hard delete of one erasure request, after the grace period (spec 8.3).

Order of work, each step idempotent and ledgered as it happens, so a crash anywhere is finished
by running the request again:
1. refuse a request that is not soft-deleted, not yet due, merged or unknown (nothing changes);
2. an active legal hold defers the request (state `held`, the reason in the ledger once per set
   of holds: the daily sweep does not repeat it); lifting it lets the next sweep resume;
3. each store's eraser runs in turn (archive first: destroying the subject's key protects every
   archived copy at once), every result appended to the ledger;
4. every eraser is asked what remains; anything left fails the run before a certificate claims
   otherwise;
5. the certificate is issued, and the request becomes `hard_deleted` with it.
A dry run goes through steps 3-4 with every eraser counting only, and records the plan.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg

from lifecycle_pipelines.erasure import certificate
from lifecycle_pipelines.erasure.holds import Hold, active_holds
from lifecycle_pipelines.erasure.requests import ErasureRequest, status
from lifecycle_pipelines.erasure.stores import Eraser, Remaining, StoreResult, Subject

log = logging.getLogger(__name__)


class NotDue(ValueError):
    """The request cannot be hard-deleted now; the message says why. Nothing changed."""


class DataRemains(RuntimeError):
    """Personal data of the subject remains after every eraser ran (stores and counts only)."""


@dataclass
class HardDeleteOutcome:
    """What one hard-delete run did."""

    request_id: int
    state: str
    dry_run: bool
    results: list[StoreResult] = field(default_factory=list)
    remaining: list[Remaining] = field(default_factory=list)
    holds: list[Hold] = field(default_factory=list)
    certificate: certificate.Certificate | None = None


def due_requests(
    control: psycopg.Connection[Any], grace: timedelta, now: datetime
) -> list[ErasureRequest]:
    """Real requests whose grace period has passed: soft-deleted ones, and held ones (their
    hold may have been lifted since)."""
    rows = control.execute(
        "SELECT request_id FROM lifecycle.erasure_requests"
        " WHERE NOT dry_run AND merged_into IS NULL AND state IN ('soft_deleted', 'held')"
        " AND soft_deleted_at <= %s ORDER BY request_id",
        (now - grace,),
    ).fetchall()
    return [r for (request_id,) in rows if (r := status(control, request_id)) is not None]


def check_due(request: ErasureRequest | None, grace: timedelta, now: datetime) -> ErasureRequest:
    """The request, if it may be hard-deleted now; NotDue names why not."""
    if request is None:
        raise NotDue("partition_key: no such erasure request")
    if request.merged_into is not None:
        raise NotDue(f"request {request.request_id} was merged into {request.merged_into}")
    if request.state not in ("soft_deleted", "held", "hard_deleted"):
        raise NotDue(
            f"request {request.request_id} is {request.state}; only a soft-deleted request is "
            "hard-deleted"
        )
    if request.dry_run:
        return request
    soft = request.soft_deleted_at
    if soft is None or soft + grace > now:
        when = "unknown" if soft is None else f"{soft + grace:%Y-%m-%d %H:%M} UTC"
        raise NotDue(
            f"request {request.request_id}: the grace period ({grace.days} days) runs until "
            f"{when}; nothing was changed"
        )
    return request


def _ledger(
    control: psycopg.Connection[Any], request_id: int, store: str, action: str, detail: dict
) -> None:
    control.execute(
        "INSERT INTO lifecycle.erasure_ledger (request_id, store, action, detail)"
        " VALUES (%s, %s, %s, %s)",
        (request_id, store, action, json.dumps(detail)),
    )


def hard_delete(
    control: psycopg.Connection[Any],
    request: ErasureRequest,
    subject: Subject,
    erasers: Sequence[Eraser],
    *,
    issue_certificate: Any,
) -> HardDeleteOutcome:
    """Run the hard delete of a due request (see the module docstring).

    `issue_certificate(document) -> Certificate` stores the certificate (injected so the
    orchestration does not know where certificates live)."""
    outcome = HardDeleteOutcome(request.request_id, request.state, request.dry_run)
    # A hold placed after the hard delete defers nothing (there is nothing left to keep) and
    # must not turn a finished request back into a held one.
    if not request.dry_run and request.state != "hard_deleted":
        outcome.holds = active_holds(control, subject.subject_id)
        if outcome.holds:
            outcome.state = "held"
            reason = "; ".join(f"hold {h.hold_id}: {h.reason}" for h in outcome.holds)
            if request.state == "held" and request.hold_reason == reason:
                return outcome  # deferred by the same holds already: recorded, nothing new
            with control.transaction():
                control.execute(
                    "UPDATE lifecycle.erasure_requests SET state = 'held', hold_reason = %s,"
                    " updated_at = now() WHERE request_id = %s",
                    (reason, request.request_id),
                )
                for hold in outcome.holds:
                    _ledger(
                        control, request.request_id, "hold", "deferred by legal hold",
                        {"hold_id": hold.hold_id, "scope": hold.scope},
                    )  # fmt: skip
            return outcome
        if request.state == "held":
            _ledger(control, request.request_id, "hold", "resumed: no active hold", {})
    action = "hard delete (dry run)" if request.dry_run else "hard delete"
    for eraser in erasers:
        results = eraser.erase(subject, dry_run=request.dry_run)
        with control.transaction():
            for result in results:
                _ledger(
                    control, request.request_id, result.store, action,
                    {"found": result.found, "changed": result.changed, "note": result.note},
                )  # fmt: skip
        outcome.results += results
        log.info(
            "erasure request %d: %s done (%d found, %d changed)",
            request.request_id,
            eraser.name,
            sum(r.found for r in results),
            sum(r.changed for r in results),
        )
    if request.dry_run:
        return outcome
    outcome.remaining = [r for eraser in erasers for r in eraser.remaining(subject)]
    left = [r for r in outcome.remaining if r.count]
    if left:
        raise DataRemains(
            f"request {request.request_id}: personal data remains in "
            + ", ".join(f"{r.store} ({r.count})" for r in left)
            + "; no certificate issued, run the request again"
        )
    document = certificate.certificate_document(
        control,
        request.request_id,
        subject_pseudonym=subject.user_key,
        outcome="erased",
        remaining=outcome.remaining,
    )
    outcome.certificate = issue_certificate(document)
    control.execute(
        "UPDATE lifecycle.erasure_requests SET state = 'hard_deleted', hold_reason = NULL,"
        " hard_deleted_at = coalesce(hard_deleted_at, now()), updated_at = now()"
        " WHERE request_id = %s",
        (request.request_id,),
    )
    outcome.state = "hard_deleted"
    return outcome

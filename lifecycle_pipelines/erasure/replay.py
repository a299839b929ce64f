"""Ledger replay: after a database or archive restore, erased subjects stay erased.

A restore brings back whatever the backup held, including subjects erased since (and a restored
control database forgets the requests certified since: `recovery.py` records them again from
their certificates first). Replaying the
ledger runs every finished request's erasure again: a hard-deleted subject's erasers (which
find and remove only what came back, and rewrite restored archive objects still pending), a
soft-deleted subject's masking. Each store where something came back is recorded in the ledger
as `replayed after restore`; counts only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from lifecycle_pipelines.erasure.recovery import RecoveredCertificate
from lifecycle_pipelines.erasure.requests import ErasureRequest, status
from lifecycle_pipelines.erasure.stores import Eraser, StoreResult, Subject

log = logging.getLogger(__name__)

REPLAY_ACTION = "replayed after restore"


@dataclass
class ReplayReport:
    """What a replay found again and removed, per store."""

    requests: int = 0
    reerased: dict[str, int] = field(default_factory=dict)
    recovered: list[RecoveredCertificate] = field(default_factory=list)  # from S3, first

    @property
    def total(self) -> int:
        return sum(self.reerased.values())


def finished_requests(control: psycopg.Connection[Any]) -> list[ErasureRequest]:
    """Real, unmerged requests whose subject is at least soft-deleted (and known by id: a
    certificate recovered for a subject no store knows any more has none)."""
    rows = control.execute(
        "SELECT request_id FROM lifecycle.erasure_requests WHERE NOT dry_run"
        " AND merged_into IS NULL AND state IN ('soft_deleted', 'held', 'hard_deleted')"
        " AND subject_id <> ''"
        " ORDER BY request_id"
    ).fetchall()
    return [r for (request_id,) in rows if (r := status(control, request_id)) is not None]


def replay_ledger(
    control: psycopg.Connection[Any],
    *,
    subject_of: Callable[[ErasureRequest], Subject],
    hard_erasers: Callable[[ErasureRequest], Sequence[Eraser]],
    soft_delete: Callable[[ErasureRequest], list[StoreResult]],
) -> ReplayReport:
    """Re-apply every finished request (see the module docstring)."""
    report = ReplayReport()
    for request in finished_requests(control):
        report.requests += 1
        subject = subject_of(request)
        if request.state == "hard_deleted":
            results = [
                result
                for eraser in hard_erasers(request)
                for result in eraser.erase(subject, dry_run=False)
            ]
        else:
            results = soft_delete(request)
        came_back = [r for r in results if r.changed]
        with control.transaction():
            for result in came_back:
                control.execute(
                    "INSERT INTO lifecycle.erasure_ledger (request_id, store, action, detail)"
                    " VALUES (%s, %s, %s, %s)",
                    (
                        request.request_id,
                        result.store,
                        REPLAY_ACTION,
                        json.dumps({"found": result.found, "changed": result.changed}),
                    ),
                )
                report.reerased[result.store] = (
                    report.reerased.get(result.store, 0) + result.changed
                )
        if came_back:
            log.warning(
                "erasure request %d: %d items had come back and were erased again",
                request.request_id,
                sum(r.changed for r in came_back),
            )
    return report

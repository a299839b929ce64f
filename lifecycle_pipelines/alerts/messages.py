"""The text of an alert: what failed, where, and where to look.

An alert names assets, checks, partitions, jobs, runs and exception classes, never a value of the
data or an exception's message (a database error's detail can quote a row): invariant 6. SNS
subjects hold at most 100 printable ASCII characters, so the subject is short (anything else in
it becomes '?') and the message carries the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PARTITION_TAG = "dagster/partition"
SUBJECT_LIMIT = 100  # SNS rejects longer subjects
PREFIX = "[lifecycle]"


@dataclass(frozen=True)
class Alert:
    """One notification: a short subject and a plain-text message."""

    subject: str
    message: str


def _subject(text: str) -> str:
    """SNS takes printable ASCII without line breaks, up to 100 characters, as a subject."""
    printable = "".join(c if " " <= c <= "~" else "?" for c in f"{PREFIX} {text}")
    return printable if len(printable) <= SUBJECT_LIMIT else printable[: SUBJECT_LIMIT - 3] + "..."


def check_failed(
    *,
    asset: str,
    check: str,
    partition: str | None,
    severity: str,
    blocking: bool,
    run_id: str,
) -> Alert:
    """A data-quality check that did not pass."""
    where = f" [{partition}]" if partition else ""
    lines = [
        f"The {severity} check '{check}' of asset '{asset}'{where} failed.",
        f"asset: {asset}",
        f"check: {check}",
        f"partition: {partition or '-'}",
        f"severity: {severity}" + (" (blocking: downstream steps did not run)" if blocking else ""),
        f"run: {run_id}",
        "The check's figures are in the run's logs and on the asset's Checks tab in the Dagster UI.",
    ]
    return Alert(_subject(f"check failed: {asset} {check}{where}"), "\n".join(lines))


def run_failed(
    *,
    job: str,
    run_id: str,
    tags: Mapping[str, str],
    failed_steps: Sequence[str],
    error_classes: Sequence[str],
    will_retry: bool = False,
) -> Alert:
    """A run that failed (`will_retry`: Dagster starts another attempt)."""
    partition = tags.get(PARTITION_TAG)
    where = f" [{partition}]" if partition else ""
    retry = " Dagster will retry it." if will_retry else ""
    lines = [
        f"Run {run_id} of job '{job}'{where} failed.{retry}",
        f"job: {job}",
        f"partition: {partition or '-'}",
        f"run: {run_id}",
        f"failed steps: {', '.join(failed_steps) or '-'}",
        f"errors: {', '.join(sorted(set(error_classes))) or '-'}",
        "Re-running the partition is safe (every step is idempotent); the run's logs say why.",
    ]
    return Alert(_subject(f"run failed: {job}{where}"), "\n".join(lines))

"""The alert sensor's cursor and code-location test, on fake run records (pure logic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from lifecycle_pipelines.alerts.sensors import LOOKBACK, RunCursor, is_ours

NOON = datetime(2026, 11, 26, 12, tzinfo=UTC)


def _record(run_id: str, ended: datetime | None) -> Any:
    return SimpleNamespace(
        end_time=None if ended is None else ended.timestamp(),
        dagster_run=SimpleNamespace(run_id=run_id),
    )


def test_a_run_ending_late_within_the_lookback_is_new_and_each_run_counts_once() -> None:
    cursor = RunCursor(NOON)
    b = _record("b", NOON + timedelta(minutes=1))
    assert cursor.is_new(b)
    cursor.mark(b)
    assert cursor.latest == NOON + timedelta(minutes=1)
    assert not cursor.is_new(b)
    late = _record("a", NOON - timedelta(minutes=5))  # ended before b, written after it
    assert cursor.is_new(late)
    too_late = _record("z", NOON + timedelta(minutes=1) - LOOKBACK - timedelta(seconds=1))
    assert not cursor.is_new(too_late)
    assert not cursor.is_new(_record("running", None))


def test_the_cursor_round_trips_and_forgets_runs_older_than_the_lookback() -> None:
    cursor = RunCursor(NOON)
    cursor.mark(_record("old", NOON - timedelta(minutes=9)))
    cursor.mark(_record("new", NOON + timedelta(minutes=2)))
    assert set(cursor.seen) == {"new"}  # "old" ended more than LOOKBACK before "new"
    again = RunCursor.parse(cursor.dump())
    assert (again.latest, again.seen) == (cursor.latest, cursor.seen)


def _context(location: str | None, repository: str | None, jobs: set[str]) -> Any:
    return SimpleNamespace(
        code_location_origin=SimpleNamespace(location_name=location) if location else None,
        repository_name=repository,
        repository_def=SimpleNamespace(has_job=lambda name: name in jobs),
    )


def _run(job: str, location: str | None, repository: str = "__repository__") -> Any:
    origin = None
    if location:
        origin = SimpleNamespace(
            location_name=location,
            repository_origin=SimpleNamespace(repository_name=repository),
        )
    return SimpleNamespace(job_name=job, remote_job_origin=origin)


def test_only_runs_of_this_code_location_are_ours() -> None:
    here = _context("lifecycle_pipelines", "__repository__", {"__ASSET_JOB"})
    assert is_ours(here, _run("__ASSET_JOB", "lifecycle_pipelines"))
    assert not is_ours(here, _run("__ASSET_JOB", "another_location"))  # same job name
    assert not is_ours(here, _run("__ASSET_JOB", "lifecycle_pipelines", "other_repository"))
    # without origins (in-process runs, tests): by the job's name
    assert is_ours(_context(None, None, {"a_job"}), _run("a_job", None))
    assert not is_ours(_context(None, None, {"a_job"}), _run("__ephemeral_asset_job__", None))

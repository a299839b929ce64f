"""The alert sensor's rules on fake runs and errors (pure logic): which runs are this code
location's, which SNS errors drop an alert instead of holding it."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from botocore.exceptions import ClientError, EndpointConnectionError

from lifecycle_pipelines.alerts.sensors import is_invalid_alert, is_ours


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


def _client_error(code: str, status: int) -> ClientError:
    response: Any = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, "Publish")


def test_only_an_alert_sns_calls_invalid_is_dropped_every_other_failure_holds_it() -> None:
    assert is_invalid_alert(_client_error("InvalidParameter", 400))
    assert is_invalid_alert(_client_error("InvalidParameterValue", 400))
    for code, status in (("NotFound", 404), ("AuthorizationError", 403), ("Throttling", 400),
                         ("KMSThrottling", 400), ("502", 502), ("InternalError", 500)):  # fmt: skip
        assert not is_invalid_alert(_client_error(code, status)), code
    assert not is_invalid_alert(EndpointConnectionError(endpoint_url="http://127.0.0.1:9"))

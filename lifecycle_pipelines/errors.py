"""Transient versus terminal errors, decided in one place.

A transient error (a dropped connection, a throttled or unreachable endpoint) is worth retrying:
`retry_transient` turns it into a Dagster `RetryRequested` with backoff. Everything else (bad
input, a policy that does not match, a failed verification) fails the run at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import psycopg
from botocore.exceptions import (
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    EndpointConnectionError,
    ConnectionClosedError,
    ConnectTimeoutError,
    ReadTimeoutError,
)


def is_transient(error: BaseException) -> bool:
    """True for errors a later attempt may not hit (connections, timeouts)."""
    return isinstance(error, TRANSIENT_ERRORS)


@contextmanager
def retry_transient(max_retries: int = 3, seconds_to_wait: float = 30.0) -> Iterator[None]:
    """Re-raise transient errors as `RetryRequested` (Dagster re-runs the step with backoff)."""
    try:
        yield
    except TRANSIENT_ERRORS as err:
        raise dg.RetryRequested(max_retries=max_retries, seconds_to_wait=seconds_to_wait) from err

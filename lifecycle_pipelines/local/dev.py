"""`make dev`: the embedded stack, seeded, with the Dagster UI; Ctrl-C stops all of it.

`dagster dev` runs in its own session. On SIGINT or SIGTERM we send SIGTERM to that whole
process group (dagster dev leaves children behind on SIGKILL), wait, kill whatever is left of the
session, then stop moto and PostgreSQL.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from lifecycle_pipelines.local.moto_server import pid_alive, proc_stat, signal_group
from lifecycle_pipelines.local.stack import LocalStack

log = logging.getLogger(__name__)


def session_members(sid: int) -> list[int]:
    """PIDs of live processes whose session id is `sid` (Linux /proc)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = proc_stat(int(entry.name))
        if fields and fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


def stop_session(sid: int, timeout: float = 10.0) -> None:
    """Stop the session led by `sid`: SIGINT its process group (what Ctrl-C sends, and what
    `dagster dev` shuts down cleanly on), then SIGTERM, then SIGKILL every process left."""
    if not signal_group(sid, signal.SIGINT, timeout):
        signal_group(sid, signal.SIGTERM, timeout)
    deadline = time.monotonic() + 5
    while (left := session_members(sid)) and time.monotonic() < deadline:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        time.sleep(0.1)


def run_dagster_dev(stack: LocalStack, env: dict[str, str], host: str, port: int) -> int:
    """Serve the Dagster UI until it exits or we are signalled; returns its exit code."""
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-m",
        "lifecycle_pipelines.definitions",
        "-h",
        host,
        "-p",
        str(port),
    ]
    stopping = False

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    # Installed before the child starts: a handled signal is reset to its default in the child,
    # whereas an ignored SIGINT (as in a backgrounded shell job) would be inherited and would
    # keep `dagster dev` from shutting down on it.
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    process = subprocess.Popen(
        command, env={**os.environ, **env}, start_new_session=True, stdin=subprocess.DEVNULL
    )
    try:
        log.info("Dagster UI on http://%s:%d (Ctrl-C stops everything)", host, port)
        while process.poll() is None and not stopping:
            time.sleep(0.2)
    finally:
        stop_session(process.pid)
        process.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        stack.down()
        if pid_alive(process.pid):
            log.error("dagster dev (pid %d) did not stop", process.pid)
    return 0 if stopping else int(process.returncode or 0)

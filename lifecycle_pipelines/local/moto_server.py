"""A moto server on loopback: the local stand-in for the AWS APIs, reached over real HTTP.

It runs as a child process in its own session so that a terminal's Ctrl-C reaches the
orchestrating command first, which then stops the stack in order. Its state lives in memory and
is gone when it stops: the bootstrap recreates it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def wait_for_http(url: str, timeout: float = 30.0) -> None:
    """Poll `url` until it answers with any HTTP status, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback URL we built
                return
        except urllib.error.HTTPError:
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            last_error = err
            time.sleep(0.1)
    raise TimeoutError(f"no answer from {url} within {timeout:.0f}s: {last_error}")


def proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state first, session id fourth);
    None when there is no such process or no /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[-1].split()


def pid_alive(pid: int) -> bool:
    """True when a process with `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = proc_stat(pid)
    return fields is None or (bool(fields) and fields[0] != "Z")


def signal_group(pid: int, signum: int, timeout: float) -> bool:
    """Send `signum` to the process group led by `pid`; True once its leader has exited."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            break
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)
    return not pid_alive(pid)


def terminate_group(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM the process group led by `pid`, then SIGKILL whatever is left after `timeout`."""
    if signal_group(pid, signal.SIGTERM, timeout):
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return


class MotoServer:
    """Start and stop `python -m moto.server` on a loopback port, tracked by a pid file."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.pid_file = state_dir / "moto.pid"
        self.log_file = state_dir / "moto.log"

    def running_pid(self) -> int | None:
        if not self.pid_file.exists():
            return None
        pid = int(self.pid_file.read_text().split()[0])
        return pid if pid_alive(pid) else None

    def start(self, host: str, port: int) -> str:
        """Start the server (or reuse the running one) and return its endpoint URL."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        pid = self.running_pid()
        if pid is not None:
            endpoint = self.pid_file.read_text().split()[1]
            wait_for_http(f"{endpoint}/moto-api/")
            return endpoint
        endpoint = f"http://{host}:{port}"
        with self.log_file.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{process.pid} {endpoint}\n")
        try:
            wait_for_http(f"{endpoint}/moto-api/")
        except TimeoutError:
            terminate_group(process.pid)
            raise
        return endpoint

    def stop(self) -> None:
        """Stop the server if it runs; a no-op otherwise."""
        pid = self.running_pid()
        if pid is not None:
            terminate_group(pid)
        self.pid_file.unlink(missing_ok=True)

"""`lifecycle dev` (what `make dev` runs): serves the UI, and SIGINT leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from lifecycle_pipelines.local.dev import session_members
from lifecycle_pipelines.local.moto_server import pid_alive
from lifecycle_pipelines.local.postgres_server import free_port


def _wait_for(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "lifecycle dev exited early"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def test_dev_serves_ui_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LIFECYCLE_"))}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lifecycle_pipelines.cli",
            "--state-dir",
            str(tmp_path / "stack"),
            "dev",
            "--port",
            str(port),
            "--users",
            "50",
            "--products",
            "20",
            "--orders",
            "300",
        ],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(f"http://127.0.0.1:{port}/server_info", process, timeout=120)
        running = _stack_processes(tmp_path)
        assert len(running) >= 3  # postgres, dagster dev, its webserver and daemon
        moto_pid = int((tmp_path / "stack" / "moto.pid").read_text().split()[0])
        assert pid_alive(moto_pid)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0
        deadline = time.monotonic() + 10
        leftovers = _stack_processes(tmp_path)
        while leftovers and time.monotonic() < deadline:
            time.sleep(0.2)
            leftovers = _stack_processes(tmp_path)
        assert leftovers == []
        assert not pid_alive(moto_pid)
        assert session_members(process.pid) == []
    finally:
        if process.poll() is None:  # a failed assertion: still stop the stack it started
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def _stack_processes(state_dir: Path) -> list[int]:
    """Live PIDs whose command line names this test's state dir: postgres (its data dir), and
    dagster dev with its children (DAGSTER_HOME in their instance ref)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if (
            str(state_dir) in cmdline
            and pid_alive(int(entry.name))
            and int(entry.name) != os.getpid()
        ):
            found.append(int(entry.name))
    return found

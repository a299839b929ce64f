"""An embedded PostgreSQL server for the local stack, built on the binaries that `pgserver` ships.

`pgserver` itself only listens on a unix socket; the pipelines talk to PostgreSQL over TCP the
way they talk to RDS, so this module drives the bundled `initdb` and `pg_ctl` directly and
starts the postmaster on 127.0.0.1 at a free port. When the process runs as root the server runs
as the unprivileged `pgserver` OS user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import logging
import os
import pwd
import secrets
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SERVER_OS_USER = "pgserver"
SUPERUSER = "postgres"


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on `host` that is free at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _bin_dir() -> Path:
    from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


@dataclass(frozen=True)
class PostgresEndpoint:
    """Where the embedded server listens and the superuser password for TCP connections."""

    host: str
    port: int
    superuser: str
    superuser_password: str
    socket_dir: Path

    def conninfo(self, dbname: str = "postgres") -> str:
        """A libpq conninfo string for the superuser over the unix socket (trust auth)."""
        return f"host={self.socket_dir} port={self.port} user={self.superuser} dbname={dbname}"


class EmbeddedPostgres:
    """Initialise, start and stop one PostgreSQL cluster in `data_dir`.

    Local connections on the unix socket are trusted (used only for bootstrap); TCP connections
    on 127.0.0.1 require a SCRAM password, like RDS does.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.socket_dir = self.data_dir / "pgsocket"
        self.log_file = self.data_dir / "postgres.log"
        self._password_file = self.data_dir / "superuser.password"

    # -- helpers ---------------------------------------------------------------------------
    def _run_as_server_user(self) -> str | None:
        return SERVER_OS_USER if os.geteuid() == 0 else None

    def _prepare_ownership(self) -> None:
        user = self._run_as_server_user()
        if user is None:
            return
        from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

        ensure_user_exists(user)
        entry = pwd.getpwnam(user)
        for path in (self.pgdata, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
            ensure_prefix_permissions(path)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        bin_dir = _bin_dir()
        ensure_prefix_permissions(bin_dir)
        self.log_file.touch(exist_ok=True)
        os.chown(self.log_file, entry.pw_uid, entry.pw_gid)

    def _run(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args,
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
            user=self._run_as_server_user(),
            stdin=subprocess.DEVNULL,
        )

    @property
    def superuser_password(self) -> str:
        return self._password_file.read_text().strip()

    # -- lifecycle -------------------------------------------------------------------------
    def init(self) -> None:
        """Create the cluster if `data_dir` holds none yet (idempotent)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.pgdata.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_ownership()
        if (self.pgdata / "PG_VERSION").exists():
            return
        password = secrets.token_urlsafe(24)
        self._password_file.write_text(password)
        self._password_file.chmod(0o600)
        pwfile = self.data_dir / "initdb.pw"
        pwfile.write_text(password)
        user = self._run_as_server_user()
        if user is not None:
            entry = pwd.getpwnam(user)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        try:
            self._run(
                [
                    str(_bin_dir() / "initdb"),
                    "-D",
                    str(self.pgdata),
                    "-U",
                    SUPERUSER,
                    "--encoding=UTF8",
                    "--locale=C",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile}",
                ],
                timeout=120,
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def is_running(self) -> bool:
        result = subprocess.run(
            [str(_bin_dir() / "pg_ctl"), "-D", str(self.pgdata), "status"],
            capture_output=True,
            text=True,
            check=False,
            user=self._run_as_server_user(),
            stdin=subprocess.DEVNULL,
        )
        return result.returncode == 0

    def running_port(self) -> int | None:
        """The port of the running postmaster, read from postmaster.pid."""
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists() or not self.is_running():
            return None
        lines = pid_file.read_text().splitlines()
        return int(lines[3]) if len(lines) > 3 else None

    def start(self, host: str = "127.0.0.1", port: int | None = None) -> PostgresEndpoint:
        """Start the server on `host:port` (a free port by default); reuse it if running."""
        self.init()
        running = self.running_port()
        if running is None:
            port = port or free_port(host)
            options = (
                f"-h {host} -p {port} -k {self.socket_dir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200 -c shared_buffers=256MB -c max_wal_size=4GB "
                "-c max_prepared_transactions=0"
            )
            try:
                self._run(
                    [
                        str(_bin_dir() / "pg_ctl"),
                        "-D",
                        str(self.pgdata),
                        "-w",
                        "-t",
                        "60",
                        "-l",
                        str(self.log_file),
                        "-o",
                        options,
                        "start",
                    ],
                    timeout=90,
                )
            except subprocess.CalledProcessError as err:
                tail = self.log_file.read_text()[-4000:] if self.log_file.exists() else ""
                raise RuntimeError(
                    f"PostgreSQL failed to start in {self.pgdata}: {err.stderr}\n{tail}"
                ) from err
            running = port
        return PostgresEndpoint(
            host=host,
            port=running,
            superuser=SUPERUSER,
            superuser_password=self.superuser_password,
            socket_dir=self.socket_dir,
        )

    def stop(self) -> None:
        """Stop the server (fast shutdown); a no-op when it is not running."""
        if not self.pgdata.exists() or not self.is_running():
            return
        self._run(
            [str(_bin_dir() / "pg_ctl"), "-D", str(self.pgdata), "-w", "-m", "fast", "stop"],
            timeout=90,
        )

    def destroy(self) -> None:
        """Stop the server and delete its data directory."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

"""The embedded default stack: PostgreSQL, a moto server and a local search directory, all on
loopback and under one state directory (default `.lifecycle/`).

`LocalStack.up()` starts what is not running, bootstraps it and writes `stack.env`, the settings
file through which the pipelines find the stack (the same variables production sets).
`LocalStack.down()` stops everything it started. The stack is a sandbox: `fresh=True` wipes it.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from lifecycle_pipelines.environments import CONTROL_DB, SHOP_DB, WAREHOUSE_DB
from lifecycle_pipelines.local.bootstrap import (
    APP_ROLE,
    BootstrapReport,
    bootstrap_aws,
    bootstrap_postgres,
    migrate_shop,
)
from lifecycle_pipelines.local.moto_server import MotoServer
from lifecycle_pipelines.local.postgres_server import EmbeddedPostgres, free_port
from lifecycle_pipelines.resources.aws import AwsResource

log = logging.getLogger(__name__)

DEFAULT_STATE_DIR = Path(".lifecycle")
LOCAL_REGION = "eu-west-1"


@dataclass(frozen=True)
class StackInfo:
    """Where each service of the running stack listens, and the settings for the pipelines."""

    state_dir: Path
    postgres_host: str
    postgres_port: int
    aws_endpoint: str
    search_dir: Path
    env: dict[str, str]

    def describe(self) -> list[str]:
        """Human-readable lines for `lifecycle up`; no secrets."""
        return [
            f"PostgreSQL  postgresql://{APP_ROLE}@{self.postgres_host}:{self.postgres_port}/"
            f"{{{SHOP_DB},{WAREHOUSE_DB},{CONTROL_DB}}}  (password in Secrets Manager "
            f"{self.env['LIFECYCLE_DB_SECRET_ID']})",
            f"AWS (moto)  {self.aws_endpoint}  region {LOCAL_REGION}: S3, KMS, DynamoDB, Glue, "
            "SNS, Secrets Manager",
            f"Search      tantivy in {self.search_dir}",
            f"Settings    {self.state_dir / 'stack.env'}",
        ]


class LocalStack:
    """Start, bootstrap and stop the embedded stack rooted at `state_dir`."""

    def __init__(self, state_dir: Path = DEFAULT_STATE_DIR) -> None:
        self.state_dir = state_dir.resolve()
        self.postgres = EmbeddedPostgres(self.state_dir / "postgres")
        self.moto = MotoServer(self.state_dir)
        self.env_file = self.state_dir / "stack.env"
        self._app_password_file = self.state_dir / "app.password"

    def _app_password(self) -> str:
        if not self._app_password_file.exists():
            self._app_password_file.write_text(secrets.token_urlsafe(24))
            self._app_password_file.chmod(0o600)
        return self._app_password_file.read_text().strip()

    def app_conninfo(self, dbname: str = SHOP_DB) -> str:
        """libpq conninfo of the application role over TCP (password auth, as on RDS)."""
        pg = self.postgres.start()
        return (
            f"host={pg.host} port={pg.port} user={APP_ROLE} "
            f"password={self._app_password()} dbname={dbname}"
        )

    def aws_env(self, endpoint: str) -> dict[str, str]:
        """The AWS variables that point boto3 (and everything built on it) at the moto server."""
        return {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_REGION": LOCAL_REGION,
            "AWS_DEFAULT_REGION": LOCAL_REGION,
            "AWS_ACCESS_KEY_ID": "local-stack",
            "AWS_SECRET_ACCESS_KEY": "local-stack",
        }

    def up(
        self, *, fresh: bool = False, moto_port: int | None = None
    ) -> tuple[StackInfo, BootstrapReport]:
        """Start PostgreSQL and moto (reusing running ones), bootstrap, write `stack.env`."""
        if fresh:
            self.down()
            shutil.rmtree(self.state_dir, ignore_errors=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        pg = self.postgres.start()
        endpoint = self.moto.start("127.0.0.1", moto_port or free_port())
        aws_env = self.aws_env(endpoint)
        password = self._app_password()
        report = BootstrapReport()
        bootstrap_postgres(pg.conninfo(), password, report)
        migrate_shop(self.app_conninfo(), report)
        aws = AwsResource(
            endpoint_url=endpoint,
            region_name=LOCAL_REGION,
            aws_access_key_id=aws_env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=aws_env["AWS_SECRET_ACCESS_KEY"],
        )
        db_secret = {
            "engine": "postgres",
            "host": pg.host,
            "port": pg.port,
            "username": APP_ROLE,
            "password": password,
            "dbname": SHOP_DB,
        }
        aws_report = bootstrap_aws(aws, db_secret)
        report.actions.update(aws_report.actions)
        search_dir = self.state_dir / "search"
        search_dir.mkdir(parents=True, exist_ok=True)
        env = {
            "LIFECYCLE_ENV": "local",
            **aws_env,
            **aws_report.outputs,
            "LIFECYCLE_SEARCH_DIR": str(search_dir),
            "DAGSTER_HOME": str(self.state_dir / "dagster_home"),
        }
        (self.state_dir / "dagster_home").mkdir(exist_ok=True)
        self._write_env(env)
        info = StackInfo(self.state_dir, pg.host, pg.port, endpoint, search_dir, env)
        return info, report

    def _write_env(self, env: dict[str, str]) -> None:
        tmp = self.env_file.with_suffix(".tmp")
        tmp.write_text("".join(f"{key}={value}\n" for key, value in sorted(env.items())))
        os.replace(tmp, self.env_file)

    def read_env(self) -> dict[str, str]:
        """The settings of the running stack, from `stack.env`."""
        if not self.env_file.exists():
            raise FileNotFoundError(
                f"{self.env_file} does not exist: start the stack with `lifecycle up`"
            )
        pairs = (line.split("=", 1) for line in self.env_file.read_text().splitlines() if line)
        return {key: value for key, value in pairs}

    def down(self) -> None:
        """Stop moto and PostgreSQL; data stays in `state_dir` until the next fresh start."""
        self.moto.stop()
        self.postgres.stop()
        self.env_file.unlink(missing_ok=True)

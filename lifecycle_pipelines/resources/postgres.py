"""PostgreSQL (Amazon RDS in production, the embedded server locally) through psycopg 3.

Credentials come from the fields, from a Secrets Manager secret in the RDS secret format
(`username`, `password`, `host`, `port`, `dbname`), or from a fresh RDS IAM auth token for every
new connection; in production TLS is verified against the RDS CA bundle (`sslmode=verify-full`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from dagster import ConfigurableResource, InitResourceContext
from psycopg import sql
from psycopg_pool import ConnectionPool
from pydantic import Field, PrivateAttr

from lifecycle_pipelines.resources.aws import AwsResource, SecretsManagerResource

log = logging.getLogger(__name__)


class PostgresResource(ConfigurableResource):
    """One PostgreSQL database, reached through a small psycopg connection pool."""

    dbname: str = Field(description="Database name.")
    host: str | None = Field(
        default=None,
        description="Host name; when unset, taken from the credentials secret's `host`.",
    )
    port: int | None = Field(
        default=None,
        description="TCP port; when unset, taken from the credentials secret or 5432.",
    )
    user: str | None = Field(
        default=None,
        description="Database user; when unset, taken from the credentials secret's `username`.",
    )
    password: str | None = Field(
        default=None,
        description="Password (prefer credentials_secret_id or iam_auth; never logged).",
    )
    credentials_secret_id: str | None = Field(
        default=None,
        description="Secrets Manager secret holding the RDS credentials JSON.",
    )
    iam_auth: bool = Field(
        default=False,
        description="Authenticate with a short-lived RDS IAM auth token instead of a password.",
    )
    sslmode: str = Field(
        default="prefer",
        description="libpq sslmode; use verify-full with sslrootcert against RDS.",
    )
    sslrootcert: str | None = Field(
        default=None, description="Path to the CA bundle used to verify the server (RDS CA)."
    )
    application_name: str = Field(
        default="lifecycle_pipelines", description="application_name shown in pg_stat_activity."
    )
    connect_timeout_seconds: int = Field(default=10, description="libpq connect_timeout.")
    statement_timeout_ms: int = Field(
        default=0, description="statement_timeout for every session; 0 means no limit."
    )
    pool_max_size: int = Field(default=4, description="Most pooled connections per process.")
    aws: AwsResource = Field(
        default_factory=AwsResource,
        description="AWS settings for Secrets Manager and RDS IAM tokens.",
    )

    _pool: ConnectionPool[psycopg.Connection[Any]] | None = PrivateAttr(default=None)
    _secret: dict[str, Any] | None = PrivateAttr(default=None)

    # -- connection parameters -----------------------------------------------------------
    def _secret_values(self) -> dict[str, Any]:
        if self.credentials_secret_id is None:
            return {}
        if self._secret is None:
            secrets = SecretsManagerResource(**self.aws.model_dump())
            self._secret = secrets.get_json(self.credentials_secret_id)
        return self._secret

    def connection_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `psycopg.connect`, resolving secrets and IAM tokens now."""
        secret = self._secret_values()
        host = self.host or secret.get("host")
        if not host:
            raise ValueError(
                f"host: no host configured for database {self.dbname!r} "
                "(set host or credentials_secret_id)"
            )
        port = int(self.port or secret.get("port") or 5432)
        user = self.user or secret.get("username")
        if not user:
            raise ValueError(f"user: no user configured for database {self.dbname!r}")
        kwargs: dict[str, Any] = {
            "host": host,
            "port": port,
            "dbname": self.dbname,
            "user": user,
            "sslmode": self.sslmode,
            "application_name": self.application_name,
            "connect_timeout": self.connect_timeout_seconds,
        }
        if self.sslrootcert:
            kwargs["sslrootcert"] = self.sslrootcert
        if self.statement_timeout_ms:
            kwargs["options"] = f"-c statement_timeout={self.statement_timeout_ms}"
        if self.iam_auth:
            kwargs["password"] = self.aws.client("rds").generate_db_auth_token(
                DBHostname=host, Port=port, DBUsername=user
            )
        else:
            password = self.password or secret.get("password")
            if password:
                kwargs["password"] = password
        return kwargs

    def describe(self) -> str:
        """`user@host:port/dbname` for logs and metadata; never includes a password."""
        kwargs = self.connection_kwargs()
        return f"{kwargs['user']}@{kwargs['host']}:{kwargs['port']}/{kwargs['dbname']}"

    # -- connections -----------------------------------------------------------------------
    def _get_pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        if self._pool is None:
            self._pool = ConnectionPool(
                kwargs=self.connection_kwargs,
                min_size=0,
                max_size=self.pool_max_size,
                open=True,
                name=f"lifecycle-{self.dbname}",
            )
        return self._pool

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; the transaction commits on success, rolls back on error."""
        with self._get_pool().connection() as conn:
            yield conn

    def connect(self, autocommit: bool = False) -> psycopg.Connection[Any]:
        """A new unpooled connection (the caller closes it), e.g. for long COPY streams."""
        return psycopg.connect(**self.connection_kwargs(), autocommit=autocommit)

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        self.close()

    def close(self) -> None:
        """Close the pool, if one was opened."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None


def copy_in(
    conn: psycopg.Connection[Any],
    table: str,
    columns: list[str],
    chunks: Iterable[bytes],
    *,
    schema: str = "public",
    fmt: str = "csv",
) -> None:
    """Stream `chunks` into `schema.table (columns)` with COPY FROM STDIN.

    `fmt` is `csv` (with a header line in the first chunk) or `binary`.
    """
    if fmt not in ("csv", "binary"):
        raise ValueError(f"fmt: expected 'csv' or 'binary', got {fmt!r}")
    options = sql.SQL("(FORMAT csv, HEADER true)" if fmt == "csv" else "(FORMAT binary)")
    statement = sql.SQL("COPY {}.{} ({}) FROM STDIN {}").format(
        sql.Identifier(schema),
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        options,
    )
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for chunk in chunks:
            copy.write(chunk)


def copy_out(
    conn: psycopg.Connection[Any], query: sql.Composable, fmt: str = "binary"
) -> Iterator[bytes]:
    """Stream the result of `query` with COPY (...) TO STDOUT, chunk by chunk."""
    if fmt not in ("csv", "binary"):
        raise ValueError(f"fmt: expected 'csv' or 'binary', got {fmt!r}")
    options = sql.SQL("(FORMAT csv, HEADER true)" if fmt == "csv" else "(FORMAT binary)")
    statement = sql.SQL("COPY ({}) TO STDOUT {}").format(query, options)
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for chunk in copy:
            yield bytes(chunk)

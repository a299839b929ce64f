"""PostgresResource: credentials from Secrets Manager, streaming COPY in and out."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from lifecycle_pipelines.environments import CONTROL_DB
from lifecycle_pipelines.local.bootstrap import SECRET_ID
from lifecycle_pipelines.resources import PostgresResource
from lifecycle_pipelines.resources.postgres import copy_in, copy_out


def test_credentials_come_from_the_secret(stack_info: object) -> None:
    resource = PostgresResource(dbname=CONTROL_DB, credentials_secret_id=SECRET_ID)
    kwargs = resource.connection_kwargs()
    assert kwargs["user"] == "lifecycle_app" and kwargs["host"] == "127.0.0.1"
    assert "password" not in resource.describe() and kwargs["password"] not in resource.describe()
    with resource.connection() as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("lifecycle_app",)
    resource.close()


def test_missing_host_names_the_field() -> None:
    with pytest.raises(ValueError, match="host"):
        PostgresResource(dbname="shop", user="u").connection_kwargs()


def test_copy_round_trip(stack_info: object) -> None:
    resource = PostgresResource(dbname=CONTROL_DB, credentials_secret_id=SECRET_ID)
    with resource.connect() as conn:
        conn.execute("CREATE TEMP TABLE t (id bigint, note text)")
        copy_in(conn, "t", ["id", "note"], [b"id,note\n1,a\n", b'2,"b,c"\n'], schema="pg_temp")
        chunks = list(
            copy_out(conn, sql.SQL("SELECT id, note FROM pg_temp.t ORDER BY id"), fmt="csv")
        )
        assert b"".join(chunks) == b'id,note\n1,a\n2,"b,c"\n'
        with pytest.raises(ValueError, match="fmt"):
            list(copy_out(conn, sql.SQL("SELECT 1"), fmt="json"))
        with pytest.raises(psycopg.errors.UndefinedTable):
            copy_in(conn, "missing", ["id"], [b"id\n1\n"])

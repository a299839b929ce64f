"""Shared fixtures: one embedded stack (PostgreSQL + moto) per test session, seeded small.

The session never reads the developer's own AWS or lifecycle settings: every AWS_* and
LIFECYCLE_* variable is removed before the stack's own settings are applied.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest

from lifecycle_pipelines.local.seed import ShopSize, seed_dynamodb, seed_shop
from lifecycle_pipelines.local.stack import LocalStack, StackInfo

TEST_SIZE = ShopSize(
    users=300, products=200, orders=3_000, as_of=date(2026, 11, 25), dynamodb_items=100
)
_ISOLATED_PREFIXES = ("AWS_", "LIFECYCLE_", "OPENSEARCH_", "REDSHIFT_", "DAGSTER_HOME")


def _clean_environment() -> dict[str, str]:
    saved = dict(os.environ)
    for key in list(os.environ):
        if key.startswith(_ISOLATED_PREFIXES):
            del os.environ[key]
    return saved


@pytest.fixture(scope="session")
def stack_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stack")


@pytest.fixture(scope="session")
def local_stack(stack_dir: Path) -> Iterator[tuple[LocalStack, StackInfo]]:
    """A running, bootstrapped, seeded stack; its settings are in os.environ for the session."""
    saved = _clean_environment()
    stack = LocalStack(stack_dir)
    try:
        info, _ = stack.up(fresh=True)
        os.environ.update(info.env)
        with psycopg.connect(stack.app_conninfo()) as conn:
            seed_shop(conn, TEST_SIZE)
        seed_dynamodb(boto3.resource("dynamodb"), TEST_SIZE)
        yield stack, info
    finally:
        stack.down()
        os.environ.clear()
        os.environ.update(saved)


def private_database(stack: LocalStack, name: str) -> str:
    """Create (afresh) an empty database owned by the application role; returns its name."""
    from psycopg import sql

    from lifecycle_pipelines.local.bootstrap import APP_ROLE

    with psycopg.connect(stack.postgres.start().conninfo(), autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(APP_ROLE)
            )
        )
    return name


def private_shop(stack: LocalStack, name: str) -> str:
    """Create (afresh) and seed a shop database of a test package's own, for tests that delete
    or change source rows; returns its name."""
    from lifecycle_pipelines.local.bootstrap import BootstrapReport, migrate_shop

    private_database(stack, name)
    migrate_shop(stack.app_conninfo(name), BootstrapReport())
    with psycopg.connect(stack.app_conninfo(name)) as conn:
        seed_shop(conn, TEST_SIZE)
    return name


def resources_with_shop(dbname: str) -> dict[str, Any]:
    """The local resources with `shop_db` bound to a test package's own shop database."""
    import dagster as dg

    from lifecycle_pipelines.environments import resources_for
    from lifecycle_pipelines.resources import PostgresResource

    resources = resources_for("local")
    resources["shop_db"] = PostgresResource(
        dbname=dbname, credentials_secret_id=dg.EnvVar("LIFECYCLE_DB_SECRET_ID"), sslmode="disable"
    )
    return resources


@pytest.fixture
def stack_info(local_stack: tuple[LocalStack, StackInfo]) -> StackInfo:
    return local_stack[1]


@pytest.fixture
def shop_conn(local_stack: tuple[LocalStack, StackInfo]) -> Iterator[psycopg.Connection]:
    stack, _ = local_stack
    with psycopg.connect(stack.app_conninfo()) as conn:
        yield conn

"""Search sync tests run against their own seeded shop database and a tantivy directory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from lifecycle_pipelines.control import ensure_control_schema
from lifecycle_pipelines.local.stack import LocalStack, StackInfo
from lifecycle_pipelines.resources.search.tantivy_backend import TantivyBackend
from lifecycle_pipelines.search_sync.index_config import load_synonyms
from lifecycle_pipelines.search_sync.sync import ProductSync, SyncSettings
from tests.conftest import private_shop

SEARCH_SHOP_DB = "shop_search_tests"


@pytest.fixture(scope="session")
def search_shop(local_stack: tuple[LocalStack, StackInfo]) -> str:
    return private_shop(local_stack[0], SEARCH_SHOP_DB)


@pytest.fixture
def shop_conn(
    local_stack: tuple[LocalStack, StackInfo], search_shop: str
) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(local_stack[0].app_conninfo(search_shop), autocommit=True) as conn:
        yield conn


@pytest.fixture
def control_conn(local_stack: tuple[LocalStack, StackInfo]) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(local_stack[0].app_conninfo("lifecycle"), autocommit=True) as conn:
        ensure_control_schema(conn)
        conn.execute("DELETE FROM lifecycle.search_sync_state")
        conn.execute("DELETE FROM lifecycle.search_tombstones")
        yield conn


@pytest.fixture
def engine(tmp_path: Path) -> TantivyBackend:
    return TantivyBackend(tmp_path / "search")


def make_sync(engine: Any, shop_conn: Any, control_conn: Any, **settings: Any) -> ProductSync:
    return ProductSync(engine, shop_conn, control_conn, load_synonyms(), SyncSettings(**settings))

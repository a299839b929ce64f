"""Erasure tests run on databases of their own: a seeded shop, an empty control database and an
empty warehouse, so that what they erase never touches another package's data."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import dagster as dg
import psycopg
import pytest
from boto3.dynamodb.conditions import Key

from lifecycle_pipelines.assets.erasure import ERASURE_PARTITIONS
from lifecycle_pipelines.control import ensure_control_schema
from lifecycle_pipelines.local.stack import LocalStack, StackInfo
from lifecycle_pipelines.resources import PostgresResource
from lifecycle_pipelines.resources.warehouse import WarehouseResource
from tests.conftest import private_database, private_shop, resources_with_shop

SHOP = "shop_erasure_tests"
CONTROL = "control_erasure_tests"
WAREHOUSE = "warehouse_erasure_tests"


@pytest.fixture(scope="session")
def erasure_databases(local_stack: tuple[LocalStack, StackInfo]) -> str:
    stack = local_stack[0]
    private_database(stack, CONTROL)
    private_database(stack, WAREHOUSE)
    return private_shop(stack, SHOP)


def _database(name: str) -> PostgresResource:
    return PostgresResource(
        dbname=name, credentials_secret_id=dg.EnvVar("LIFECYCLE_DB_SECRET_ID"), sslmode="disable"
    )


def erasure_resources() -> dict[str, Any]:
    """Local resources bound to the erasure tests' shop, control database and warehouse."""
    resources = resources_with_shop(SHOP)
    resources["control_db"] = _database(CONTROL)
    resources["warehouse"] = WarehouseResource(
        backend="postgres",
        postgres=_database(WAREHOUSE),
        pseudonym_secret_id=dg.EnvVar("LIFECYCLE_PSEUDONYM_SECRET_ID"),
    )
    return resources


@pytest.fixture
def shop(local_stack: Any, erasure_databases: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(local_stack[0].app_conninfo(SHOP), autocommit=True) as conn:
        yield conn


@pytest.fixture
def control(local_stack: Any, erasure_databases: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(local_stack[0].app_conninfo(CONTROL), autocommit=True) as conn:
        ensure_control_schema(conn)
        yield conn


@pytest.fixture
def warehouse(local_stack: Any, erasure_databases: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(local_stack[0].app_conninfo(WAREHOUSE), autocommit=True) as conn:
        yield conn


def dynamodb_items_of(subject: str) -> dict[str, list[dict[str, Any]]]:
    """The subject's whole Sessions and UserPreferences items (to put back after a test: the
    tables are shared with the rest of the session)."""
    dynamodb = boto3.resource("dynamodb")
    sessions = dynamodb.Table("Sessions")
    found = sessions.query(
        IndexName="userId-index", KeyConditionExpression=Key("userId").eq(subject)
    )["Items"]
    preference = dynamodb.Table("UserPreferences").get_item(Key={"userId": subject}).get("Item")
    return {
        "Sessions": [sessions.get_item(Key={"sessionId": i["sessionId"]})["Item"] for i in found],
        "UserPreferences": [preference] if preference is not None else [],
    }


def put_back(items: dict[str, list[dict[str, Any]]]) -> None:
    """Write items saved by `dynamodb_items_of` again."""
    dynamodb = boto3.resource("dynamodb")
    for table, rows in items.items():
        with dynamodb.Table(table).batch_writer() as batch:
            for item in rows:
                batch.put_item(Item=item)


def run_request(
    asset: dg.AssetsDefinition, request_id: int, **kwargs: Any
) -> dg.ExecuteInProcessResult:
    """Materialize one request's partition of an erasure asset."""
    instance = kwargs.pop("instance", None) or dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(ERASURE_PARTITIONS.name or "", [str(request_id)])
    return dg.materialize(
        [asset],
        resources=erasure_resources(),
        partition_key=str(request_id),
        instance=instance,
        raise_on_error=False,
        **kwargs,
    )

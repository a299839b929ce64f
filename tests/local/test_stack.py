"""The embedded stack: services listen, bootstrap is idempotent, auth is enforced."""

from __future__ import annotations

import json

import boto3
import psycopg
import pytest

from lifecycle_pipelines.local.bootstrap import SECRET_ID, bootstrap_aws
from lifecycle_pipelines.local.stack import LocalStack, StackInfo
from lifecycle_pipelines.resources.aws import AwsResource
from lifecycle_pipelines.storage_layout import BUCKETS, TABLES


def _aws_snapshot() -> dict[str, object]:
    s3 = boto3.client("s3")
    dynamodb = boto3.client("dynamodb")
    snapshot: dict[str, object] = {
        "buckets": sorted(b["Name"] for b in s3.list_buckets()["Buckets"]),
        "tables": sorted(dynamodb.list_tables()["TableNames"]),
        "keys": len(boto3.client("kms").list_keys()["Keys"]),
        "topics": sorted(t["TopicArn"] for t in boto3.client("sns").list_topics()["Topics"]),
        "secret_versions": len(
            boto3.client("secretsmanager").list_secret_version_ids(SecretId=SECRET_ID)["Versions"]
        ),
    }
    for spec in BUCKETS:
        name = f"lifecycle-local-{spec.suffix}"
        snapshot[name] = (
            s3.get_bucket_versioning(Bucket=name).get("Status"),
            json.dumps(
                s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"],
                sort_keys=True,
            ),
        )
    return snapshot


def test_stack_reports_where_services_listen(stack_info: StackInfo) -> None:
    lines = stack_info.describe()
    assert any(str(stack_info.postgres_port) in line for line in lines)
    assert any(stack_info.aws_endpoint in line for line in lines)
    assert stack_info.aws_endpoint.startswith("http://127.0.0.1:")


def test_bootstrap_twice_changes_nothing(local_stack: tuple[LocalStack, StackInfo]) -> None:
    stack, _ = local_stack
    before = _aws_snapshot()
    _, report = stack.up()
    assert report.created == []
    assert set(report.actions.values()) == {"exists"}
    assert _aws_snapshot() == before


def test_bootstrap_creates_spec_layout(stack_info: StackInfo) -> None:
    s3 = boto3.client("s3")
    archive = s3.get_object_lock_configuration(Bucket="lifecycle-local-archive")
    assert archive["ObjectLockConfiguration"]["ObjectLockEnabled"] == "Enabled"
    logs = s3.get_bucket_lifecycle_configuration(Bucket="lifecycle-local-application-logs")
    assert logs["Rules"][0]["Expiration"] == {"Days": 365}
    assert s3.get_bucket_versioning(Bucket="lifecycle-local-application-logs").get("Status") is None
    dynamodb = boto3.client("dynamodb")
    assert sorted(dynamodb.list_tables()["TableNames"]) == sorted(t.name for t in TABLES)
    sessions = dynamodb.describe_table(TableName="Sessions")["Table"]
    assert {i["IndexName"] for i in sessions["GlobalSecondaryIndexes"]} == {
        "userId-index",
        "expiryTime-index",
    }
    ttl = dynamodb.describe_time_to_live(TableName="Sessions")["TimeToLiveDescription"]
    assert ttl["TimeToLiveStatus"] == "ENABLED"
    assert ttl["AttributeName"] == "expiryTime"


def test_bootstrap_repairs_drift(stack_info: StackInfo) -> None:
    s3 = boto3.client("s3")
    secrets = boto3.client("secretsmanager")
    secret = json.loads(secrets.get_secret_value(SecretId=SECRET_ID)["SecretString"])
    s3.delete_bucket_encryption(Bucket="lifecycle-local-static-assets")
    report = bootstrap_aws(AwsResource(), secret)
    assert report.actions["s3 bucket lifecycle-local-static-assets"] == "created"
    assert report.actions["secret"] == "exists"
    rules = s3.get_bucket_encryption(Bucket="lifecycle-local-static-assets")
    default = rules["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert default["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"


def test_tcp_connections_require_the_password(stack_info: StackInfo) -> None:
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host=stack_info.postgres_host,
            port=stack_info.postgres_port,
            user="lifecycle_app",
            password="wrong",
            dbname="shop",
            connect_timeout=5,
        )

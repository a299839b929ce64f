"""Environment binding: the one place that decides which backends and endpoints each environment
uses. `LIFECYCLE_ENV` selects `local`, `staging` or `production`.

Every endpoint and secret is an `EnvVar` (resolved when a run starts, never at import) or comes
from Secrets Manager. The local stack (`lifecycle up`) writes the same variables into
`.lifecycle/stack.env`, so local runs take exactly the production code path with other values.

| variable | used for |
|---|---|
| `AWS_REGION`, `AWS_ENDPOINT_URL`, credentials | boto3's own resolution (moto locally) |
| `LIFECYCLE_DB_SECRET_ID` | RDS credentials secret (username/password/host/port) |
| `LIFECYCLE_PSEUDONYM_SECRET_ID` | HMAC key of the warehouse's pseudonymous user keys |
| `LIFECYCLE_DB_HOST`, `LIFECYCLE_DB_PORT` | RDS endpoint (staging/production, IAM auth) |
| `LIFECYCLE_DB_USER` | RDS IAM database user (staging/production) |
| `LIFECYCLE_RDS_CA_BUNDLE` | path of the RDS CA bundle for sslmode=verify-full |
| `LIFECYCLE_BUCKET_PREFIX`, `LIFECYCLE_KMS_KEY_ID` | bucket names, SSE-KMS key |
| `LIFECYCLE_ALERTS_TOPIC_ARN` | SNS alerts topic |
| `LIFECYCLE_DYNAMODB_TABLE_SUFFIX` | DynamoDB table names (staging/production) |
| `LIFECYCLE_SEARCH_DIR` | tantivy directory (local) |
| `OPENSEARCH_URL` | Amazon OpenSearch endpoint (staging/production, SigV4) |
| `REDSHIFT_HOST`, `REDSHIFT_DATABASE`, `REDSHIFT_CLUSTER_ID`, `REDSHIFT_DB_USER`, `REDSHIFT_COPY_ROLE_ARN` | warehouse (staging/production) |
"""

from __future__ import annotations

import os
from typing import Any

from dagster import EnvVar

from lifecycle_pipelines.resources import (
    AlertsResource,
    DynamoDBResource,
    PostgresResource,
    S3Resource,
    SearchResource,
    WarehouseResource,
)

ENVIRONMENTS = ("local", "staging", "production")

SHOP_DB = "shop"
CONTROL_DB = "lifecycle"
WAREHOUSE_DB = "warehouse"


def current_environment() -> str:
    """The environment named by LIFECYCLE_ENV (default `local`); rejects unknown names."""
    name = os.environ.get("LIFECYCLE_ENV", "local")
    if name not in ENVIRONMENTS:
        raise ValueError(f"LIFECYCLE_ENV: expected one of {ENVIRONMENTS}, got {name!r}")
    return name


def _local_database(dbname: str) -> PostgresResource:
    return PostgresResource(
        dbname=dbname,
        credentials_secret_id=EnvVar("LIFECYCLE_DB_SECRET_ID"),
        sslmode="disable",
    )


def _rds_database(dbname: str) -> PostgresResource:
    return PostgresResource(
        dbname=dbname,
        host=EnvVar("LIFECYCLE_DB_HOST"),
        port=EnvVar.int("LIFECYCLE_DB_PORT"),
        user=EnvVar("LIFECYCLE_DB_USER"),
        iam_auth=True,
        sslmode="verify-full",
        sslrootcert=EnvVar("LIFECYCLE_RDS_CA_BUNDLE"),
        statement_timeout_ms=15 * 60 * 1000,
    )


def resources_for(env: str) -> dict[str, Any]:
    """The resource bindings for environment `env` (`local`, `staging` or `production`)."""
    if env not in ENVIRONMENTS:
        raise ValueError(f"LIFECYCLE_ENV: expected one of {ENVIRONMENTS}, got {env!r}")
    alerts = AlertsResource(topic_arn=EnvVar("LIFECYCLE_ALERTS_TOPIC_ARN"))
    s3 = S3Resource(
        bucket_prefix=EnvVar("LIFECYCLE_BUCKET_PREFIX"),
        sse_kms_key_id=EnvVar("LIFECYCLE_KMS_KEY_ID"),
    )
    if env == "local":
        return {
            "shop_db": _local_database(SHOP_DB),
            "control_db": _local_database(CONTROL_DB),
            "s3": s3,
            "dynamodb": DynamoDBResource(),
            "search": SearchResource(backend="tantivy", local_dir=EnvVar("LIFECYCLE_SEARCH_DIR")),
            "warehouse": WarehouseResource(
                backend="postgres",
                postgres=_local_database(WAREHOUSE_DB),
                pseudonym_secret_id=EnvVar("LIFECYCLE_PSEUDONYM_SECRET_ID"),
            ),
            "alerts": alerts,
        }
    return {
        "shop_db": _rds_database(SHOP_DB),
        "control_db": _rds_database(CONTROL_DB),
        "s3": s3,
        "dynamodb": DynamoDBResource(table_name_suffix=EnvVar("LIFECYCLE_DYNAMODB_TABLE_SUFFIX")),
        "search": SearchResource(backend="opensearch", url=EnvVar("OPENSEARCH_URL"), sigv4=True),
        "warehouse": WarehouseResource(
            backend="redshift",
            host=EnvVar("REDSHIFT_HOST"),
            database=EnvVar("REDSHIFT_DATABASE"),
            cluster_identifier=EnvVar("REDSHIFT_CLUSTER_ID"),
            db_user=EnvVar("REDSHIFT_DB_USER"),
            copy_iam_role_arn=EnvVar("REDSHIFT_COPY_ROLE_ARN"),
            pseudonym_secret_id=EnvVar("LIFECYCLE_PSEUDONYM_SECRET_ID"),
        ),
        "alerts": alerts,
    }

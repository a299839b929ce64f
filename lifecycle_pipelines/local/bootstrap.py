"""Idempotent bootstrap of the local stack: databases and roles in PostgreSQL, and on the moto
server the KMS key, the S3 buckets of spec 6.1, the DynamoDB tables of spec 4.1.2, the SNS alerts
topic and the Secrets Manager secret with the database credentials.

Every step looks before it writes, so a second run creates and changes nothing; each step
reports `created` or `exists` so tests and users can see that.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from lifecycle_pipelines.archive.glue import GLUE_DATABASE
from lifecycle_pipelines.environments import CONTROL_DB, SHOP_DB, WAREHOUSE_DB
from lifecycle_pipelines.migrations import apply_migrations
from lifecycle_pipelines.resources.aws import AwsResource
from lifecycle_pipelines.storage_audit import (
    PUBLIC_ACCESS_FLAGS,
    compare_bucket,
    read_bucket_config,
)
from lifecycle_pipelines.storage_layout import BUCKETS, TABLES, BucketSpec, TableSpec

log = logging.getLogger(__name__)

SHOP_SCHEMA_DIR = Path(__file__).with_name("shop_schema")
APP_ROLE = "lifecycle_app"
KMS_ALIAS = "alias/lifecycle-local-data"
SECRET_ID = "lifecycle/local/postgres"  # noqa: S105 - a secret name, not a secret
PSEUDONYM_SECRET_ID = "lifecycle/local/pseudonym-key"  # noqa: S105 - a secret name
ALERTS_TOPIC = "lifecycle-local-alerts"
BUCKET_PREFIX = "lifecycle-local"


@dataclass
class BootstrapReport:
    """What the bootstrap did: `created` or `exists` per resource, plus outputs."""

    actions: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    def record(self, name: str, created: bool) -> None:
        self.actions[name] = "created" if created else "exists"

    @property
    def created(self) -> list[str]:
        return [name for name, action in self.actions.items() if action == "created"]


# -- PostgreSQL ------------------------------------------------------------------------------
def bootstrap_postgres(admin_conninfo: str, app_password: str, report: BootstrapReport) -> None:
    """Create the application role and the shop, warehouse and control databases."""
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone()
        if exists is None:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(APP_ROLE), sql.Literal(app_password)
                )
            )
        report.record(f"postgres role {APP_ROLE}", exists is None)
        # Commit-safe watermarks read other sessions' transaction starts (pg_stat_activity);
        # on RDS the pipelines' role needs the same grant (see the README).
        conn.execute(sql.SQL("GRANT pg_read_all_stats TO {}").format(sql.Identifier(APP_ROLE)))
        for dbname in (SHOP_DB, WAREHOUSE_DB, CONTROL_DB):
            found = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)
            ).fetchone()
            if found is None:
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(dbname), sql.Identifier(APP_ROLE)
                    )
                )
            report.record(f"postgres database {dbname}", found is None)


def migrate_shop(conninfo: str, report: BootstrapReport) -> None:
    """Apply the shop schema migrations to the shop database (as the application role)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        applied = apply_migrations(conn, SHOP_SCHEMA_DIR)
    report.record("shop schema", bool(applied))


# -- AWS -------------------------------------------------------------------------------------
def ensure_kms_key(aws: AwsResource, report: BootstrapReport) -> str:
    """The ARN of the local data key behind KMS_ALIAS, created once."""
    kms = aws.client("kms")
    for alias in kms.list_aliases()["Aliases"]:
        if alias["AliasName"] == KMS_ALIAS and "TargetKeyId" in alias:
            arn = kms.describe_key(KeyId=alias["TargetKeyId"])["KeyMetadata"]["Arn"]
            report.record("kms key", False)
            return str(arn)
    key = kms.create_key(
        Description="lifecycle_pipelines local data key", KeyUsage="ENCRYPT_DECRYPT"
    )
    arn = key["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName=KMS_ALIAS, TargetKeyId=key["KeyMetadata"]["KeyId"])
    report.record("kms key", True)
    return str(arn)


def ensure_bucket(
    aws: AwsResource, spec: BucketSpec, kms_key_arn: str, report: BootstrapReport
) -> str:
    """Create one bucket, then repair every setting the storage audit finds off-spec."""
    s3 = aws.client("s3")
    name = spec.name(BUCKET_PREFIX)
    config = read_bucket_config(s3, name)
    changed = config is None
    if config is None:
        args: dict[str, Any] = {"Bucket": name}
        region = aws.resolved_region()
        if region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": region}
        if spec.object_lock:
            args["ObjectLockEnabledForBucket"] = True
        s3.create_bucket(**args)
        config = read_bucket_config(s3, name)
    off_spec = {finding.setting for finding in compare_bucket(spec, name, config)}
    if "versioning" in off_spec and spec.versioning:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    if "public access block" in off_spec:
        s3.put_public_access_block(
            Bucket=name, PublicAccessBlockConfiguration=dict.fromkeys(PUBLIC_ACCESS_FLAGS, True)
        )
    rules = (config or {}).get("encryption", {}).get("Rules", [{}])
    current_key = rules[0].get("ApplyServerSideEncryptionByDefault", {}).get("KMSMasterKeyID")
    if "default encryption" in off_spec or current_key != kms_key_arn:
        s3.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": {
                            "SSEAlgorithm": "aws:kms",
                            "KMSMasterKeyID": kms_key_arn,
                        },
                        "BucketKeyEnabled": True,
                    }
                ]
            },
        )
        off_spec.add("default encryption")
    if off_spec & {"lifecycle transitions", "expiration days"}:
        s3.put_bucket_lifecycle_configuration(
            Bucket=name, LifecycleConfiguration={"Rules": spec.lifecycle_rules()}
        )
    report.record(f"s3 bucket {name}", changed or bool(off_spec))
    return name


def ensure_table(aws: AwsResource, spec: TableSpec, report: BootstrapReport) -> None:
    """Create one DynamoDB table with its GSIs (on-demand) and its TTL attribute."""
    dynamodb = aws.client("dynamodb")
    name = spec.table_name("")
    changed = False
    try:
        dynamodb.describe_table(TableName=name)
    except dynamodb.exceptions.ResourceNotFoundException:
        key_schema = [{"AttributeName": spec.hash_key, "KeyType": "HASH"}]
        if spec.range_key:
            key_schema.append({"AttributeName": spec.range_key, "KeyType": "RANGE"})
        args: dict[str, Any] = {
            "TableName": name,
            "BillingMode": "PAY_PER_REQUEST",
            "KeySchema": key_schema,
            "AttributeDefinitions": [
                {"AttributeName": n, "AttributeType": t} for n, t in spec.key_attributes().items()
            ],
        }
        if spec.indexes:
            args["GlobalSecondaryIndexes"] = [
                {
                    "IndexName": index.name,
                    "KeySchema": [{"AttributeName": index.hash_key, "KeyType": "HASH"}]
                    + (
                        [{"AttributeName": index.range_key, "KeyType": "RANGE"}]
                        if index.range_key
                        else []
                    ),
                    "Projection": {"ProjectionType": "ALL"},
                }
                for index in spec.indexes
            ]
        dynamodb.create_table(**args)
        dynamodb.get_waiter("table_exists").wait(TableName=name)
        changed = True
    if spec.ttl_attribute:
        ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if ttl.get("TimeToLiveStatus") != "ENABLED":
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute},
            )
            changed = True
    report.record(f"dynamodb table {name}", changed)


def ensure_topic(aws: AwsResource, report: BootstrapReport) -> str:
    """The alerts topic ARN (CreateTopic is idempotent; we still look first to report it)."""
    sns = aws.client("sns")
    topics = [t["TopicArn"] for t in sns.list_topics()["Topics"]]
    existing = [arn for arn in topics if arn.endswith(f":{ALERTS_TOPIC}")]
    if existing:
        report.record("sns topic", False)
        return str(existing[0])
    report.record("sns topic", True)
    return str(sns.create_topic(Name=ALERTS_TOPIC)["TopicArn"])


def ensure_secret(aws: AwsResource, value: dict[str, Any], report: BootstrapReport) -> str:
    """The database credentials secret, created once and updated only when its value changed."""
    secrets = aws.client("secretsmanager")
    text = json.dumps(value, sort_keys=True)
    try:
        current = secrets.get_secret_value(SecretId=SECRET_ID)
    except secrets.exceptions.ResourceNotFoundException:
        secrets.create_secret(Name=SECRET_ID, SecretString=text)
        report.record("secret", True)
        return SECRET_ID
    changed = current["SecretString"] != text
    if changed:
        secrets.put_secret_value(SecretId=SECRET_ID, SecretString=text)
    report.record("secret", changed)
    return SECRET_ID


def ensure_pseudonym_key(aws: AwsResource, report: BootstrapReport) -> str:
    """The secret HMAC key that turns user ids into the warehouse's pseudonymous user keys;
    created once with 32 random bytes and never rotated by the bootstrap (keys would change)."""
    secrets = aws.client("secretsmanager")
    try:
        secrets.describe_secret(SecretId=PSEUDONYM_SECRET_ID)
        report.record("pseudonym key", False)
    except secrets.exceptions.ResourceNotFoundException:
        secrets.create_secret(
            Name=PSEUDONYM_SECRET_ID,
            SecretString=json.dumps({"hmac_key_hex": os.urandom(32).hex()}),
        )
        report.record("pseudonym key", True)
    return PSEUDONYM_SECRET_ID


def ensure_glue_database(aws: AwsResource, report: BootstrapReport) -> str:
    """The Glue catalog database in which archive partitions are registered for Athena."""
    glue = aws.client("glue")
    try:
        glue.get_database(Name=GLUE_DATABASE)
        report.record("glue database", False)
    except glue.exceptions.EntityNotFoundException:
        glue.create_database(
            DatabaseInput={"Name": GLUE_DATABASE, "Description": "lifecycle_pipelines archives"}
        )
        report.record("glue database", True)
    return GLUE_DATABASE


def bootstrap_aws(aws: AwsResource, db_secret: dict[str, Any]) -> BootstrapReport:
    """Create (or confirm) every AWS resource of the local stack."""
    report = BootstrapReport()
    kms_arn = ensure_kms_key(aws, report)
    for spec in BUCKETS:
        ensure_bucket(aws, spec, kms_arn, report)
    for table in TABLES:
        ensure_table(aws, table, report)
    report.outputs["LIFECYCLE_KMS_KEY_ID"] = kms_arn
    report.outputs["LIFECYCLE_GLUE_DATABASE"] = ensure_glue_database(aws, report)
    report.outputs["LIFECYCLE_ALERTS_TOPIC_ARN"] = ensure_topic(aws, report)
    report.outputs["LIFECYCLE_DB_SECRET_ID"] = ensure_secret(aws, db_secret, report)
    report.outputs["LIFECYCLE_PSEUDONYM_SECRET_ID"] = ensure_pseudonym_key(aws, report)
    report.outputs["LIFECYCLE_BUCKET_PREFIX"] = BUCKET_PREFIX
    return report

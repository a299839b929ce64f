"""`storage_layout_audit`: checks the account's buckets and tables against the specification."""

import time
from collections.abc import Iterator

import dagster as dg

from lifecycle_pipelines.resources import DynamoDBResource, S3Resource
from lifecycle_pipelines.storage_audit import (
    compare_bucket,
    compare_table,
    findings_markdown,
    read_bucket_config,
    read_table_config,
)
from lifecycle_pipelines.storage_layout import BUCKETS, TABLES

BUCKET_CHECK = "buckets_match_spec"
TABLE_CHECK = "dynamodb_tables_match_spec"


@dg.asset(
    group_name="platform",
    kinds={"s3", "dynamodb"},
    owners=["team:data-platform"],
    description=(
        "Audit of the S3 buckets (spec 6.1: versioning, lifecycle, public access, SSE-KMS) and the "
        "DynamoDB tables (spec 4.1.2: keys, GSIs, TTL) of this environment."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            BUCKET_CHECK,
            asset="storage_layout_audit",
            description="Every bucket exists and is configured as spec 6.1 says.",
        ),
        dg.AssetCheckSpec(
            TABLE_CHECK,
            asset="storage_layout_audit",
            description="Every DynamoDB table of spec 4.1.2 exists with its GSIs and TTL.",
        ),
    ],
    retry_policy=dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL),
)
def storage_layout_audit(
    context: dg.AssetExecutionContext, s3: S3Resource, dynamodb: DynamoDBResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Read every bucket's and table's configuration and report where it differs from the spec."""
    started = time.monotonic()
    s3_client = s3.client("s3")
    bucket_findings = []
    for spec in BUCKETS:
        name = s3.bucket(spec.suffix)
        bucket_findings += compare_bucket(spec, name, read_bucket_config(s3_client, name))
    context.log.info("audited %d buckets: %d findings", len(BUCKETS), len(bucket_findings))
    dynamo_client = dynamodb.client("dynamodb")
    table_findings = []
    for table in TABLES:
        name = dynamodb.table_name(table.name)
        table_findings += compare_table(table, name, read_table_config(dynamo_client, name))
    context.log.info("audited %d tables: %d findings", len(TABLES), len(table_findings))
    yield dg.MaterializeResult(
        metadata={
            "buckets": len(BUCKETS),
            "tables": len(TABLES),
            "findings": len(bucket_findings) + len(table_findings),
            "duration_seconds": round(time.monotonic() - started, 3),
            "summary": dg.MetadataValue.md(findings_markdown(bucket_findings + table_findings)),
        }
    )
    for check, findings in ((BUCKET_CHECK, bucket_findings), (TABLE_CHECK, table_findings)):
        yield dg.AssetCheckResult(
            check_name=check,
            passed=not findings,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "findings": len(findings),
                "details": dg.MetadataValue.md(findings_markdown(findings)),
            },
        )

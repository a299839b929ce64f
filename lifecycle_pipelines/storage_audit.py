"""Compare a live account's S3 buckets and DynamoDB tables with the storage layout of the spec.

Pure comparison functions take the configuration as AWS returns it, so they are tested without
AWS; `read_bucket_config` and `read_table_config` fetch it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from lifecycle_pipelines.storage_layout import BucketSpec, TableSpec

PUBLIC_ACCESS_FLAGS = (
    "BlockPublicAcls",
    "IgnorePublicAcls",
    "BlockPublicPolicy",
    "RestrictPublicBuckets",
)


@dataclass(frozen=True)
class Finding:
    """One difference between the live configuration and the spec."""

    resource: str
    setting: str
    expected: str
    actual: str


def read_bucket_config(s3: Any, bucket: str) -> dict[str, Any] | None:
    """The settings the audit compares, or None when the bucket does not exist."""

    def optional(call: Any, key: str, missing: tuple[str, ...]) -> Any:
        try:
            return call(Bucket=bucket).get(key)
        except ClientError as err:
            if err.response["Error"]["Code"] in missing:
                return None
            raise

    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as err:
        if err.response["Error"]["Code"] in ("404", "NoSuchBucket", "NotFound"):
            return None
        raise
    return {
        "versioning": s3.get_bucket_versioning(Bucket=bucket).get("Status"),
        "lifecycle": optional(
            s3.get_bucket_lifecycle_configuration, "Rules", ("NoSuchLifecycleConfiguration",)
        )
        or [],
        "public_access_block": optional(
            s3.get_public_access_block,
            "PublicAccessBlockConfiguration",
            ("NoSuchPublicAccessBlockConfiguration",),
        )
        or {},
        "encryption": optional(
            s3.get_bucket_encryption,
            "ServerSideEncryptionConfiguration",
            ("ServerSideEncryptionConfigurationNotFoundError",),
        )
        or {},
    }


def _transitions(rules: list[dict[str, Any]]) -> list[tuple[int, str]]:
    found = []
    for rule in rules:
        if rule.get("Status") != "Enabled":
            continue
        for transition in rule.get("Transitions", []):
            found.append((int(transition["Days"]), str(transition["StorageClass"])))
    return sorted(found)


def _expiration(rules: list[dict[str, Any]]) -> int | None:
    for rule in rules:
        if rule.get("Status") == "Enabled" and "Days" in rule.get("Expiration", {}):
            return int(rule["Expiration"]["Days"])
    return None


def compare_bucket(spec: BucketSpec, name: str, config: dict[str, Any] | None) -> list[Finding]:
    """Differences between a bucket's live configuration and its spec."""
    if config is None:
        return [Finding(name, "exists", "yes", "no")]
    findings = []
    want_versioning = "Enabled" if spec.versioning else "not enabled"
    have_versioning = config["versioning"] if config["versioning"] == "Enabled" else "not enabled"
    if want_versioning != have_versioning:
        findings.append(Finding(name, "versioning", want_versioning, have_versioning))
    want = sorted((t.days, t.storage_class) for t in spec.transitions)
    have = _transitions(config["lifecycle"])
    if want != have:
        findings.append(Finding(name, "lifecycle transitions", str(want), str(have)))
    if spec.expiration_days != _expiration(config["lifecycle"]):
        findings.append(
            Finding(
                name,
                "expiration days",
                str(spec.expiration_days),
                str(_expiration(config["lifecycle"])),
            )
        )
    block = config["public_access_block"]
    if not all(block.get(flag) for flag in PUBLIC_ACCESS_FLAGS):
        findings.append(Finding(name, "public access block", "all four blocked", str(block)))
    rules = config["encryption"].get("Rules", [])
    algorithm = rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] if rules else "none"
    if algorithm != "aws:kms":
        findings.append(Finding(name, "default encryption", "aws:kms", algorithm))
    return findings


def read_table_config(dynamodb: Any, table: str) -> dict[str, Any] | None:
    """DescribeTable plus the TTL description, or None when the table does not exist."""
    try:
        description = dynamodb.describe_table(TableName=table)["Table"]
    except dynamodb.exceptions.ResourceNotFoundException:
        return None
    ttl = dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    return {"table": description, "ttl": ttl}


def compare_table(spec: TableSpec, name: str, config: dict[str, Any] | None) -> list[Finding]:
    """Differences between a DynamoDB table and its spec (keys, GSIs, TTL)."""
    if config is None:
        return [Finding(name, "exists", "yes", "no")]
    findings = []
    table = config["table"]
    keys = {k["KeyType"]: k["AttributeName"] for k in table["KeySchema"]}
    want_keys = {"HASH": spec.hash_key, **({"RANGE": spec.range_key} if spec.range_key else {})}
    if keys != want_keys:
        findings.append(Finding(name, "key schema", str(want_keys), str(keys)))
    have_indexes = sorted(i["IndexName"] for i in table.get("GlobalSecondaryIndexes", []))
    want_indexes = sorted(i.name for i in spec.indexes)
    if have_indexes != want_indexes:
        findings.append(
            Finding(name, "global secondary indexes", str(want_indexes), str(have_indexes))
        )
    if spec.ttl_attribute:
        ttl = config["ttl"]
        actual = f"{ttl.get('TimeToLiveStatus')} on {ttl.get('AttributeName')}"
        if (
            ttl.get("TimeToLiveStatus") != "ENABLED"
            or ttl.get("AttributeName") != spec.ttl_attribute
        ):
            findings.append(Finding(name, "ttl", f"ENABLED on {spec.ttl_attribute}", actual))
    return findings


def findings_markdown(findings: list[Finding]) -> str:
    """A markdown table of findings for asset metadata."""
    if not findings:
        return "Every bucket and table matches the storage specification."
    lines = ["| resource | setting | expected | actual |", "|---|---|---|---|"]
    lines += [f"| {f.resource} | {f.setting} | {f.expected} | {f.actual} |" for f in findings]
    return "\n".join(lines)

"""The storage layout comparison, on configurations shaped like AWS's answers."""

from __future__ import annotations

from lifecycle_pipelines.storage_audit import (
    compare_bucket,
    compare_table,
    findings_markdown,
)
from lifecycle_pipelines.storage_layout import bucket_spec, table_spec

GOOD_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
KMS = {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms"}}]}


def test_matching_bucket_has_no_findings() -> None:
    spec = bucket_spec("application-logs")
    config = {
        "versioning": None,
        "lifecycle": spec.lifecycle_rules(),
        "public_access_block": GOOD_BLOCK,
        "encryption": KMS,
    }
    assert compare_bucket(spec, "b", config) == []


def test_drifted_bucket_reports_each_setting() -> None:
    spec = bucket_spec("product-images")
    config = {
        "versioning": "Suspended",
        "lifecycle": [],
        "public_access_block": {**GOOD_BLOCK, "BlockPublicPolicy": False},
        "encryption": {
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    }
    settings = {f.setting for f in compare_bucket(spec, "b", config)}
    assert settings == {
        "versioning",
        "lifecycle transitions",
        "public access block",
        "default encryption",
    }
    assert compare_bucket(spec, "b", None)[0].setting == "exists"
    assert "| b | versioning |" in findings_markdown(compare_bucket(spec, "b", config))


def test_table_ttl_and_indexes() -> None:
    spec = table_spec("Sessions")
    config = {
        "table": {
            "KeySchema": [{"AttributeName": "sessionId", "KeyType": "HASH"}],
            "GlobalSecondaryIndexes": [{"IndexName": "userId-index"}],
        },
        "ttl": {"TimeToLiveStatus": "DISABLED"},
    }
    settings = {f.setting for f in compare_table(spec, "Sessions", config)}
    assert settings == {"global secondary indexes", "ttl"}

"""S3Resource writes with SSE-KMS and checksums."""

from __future__ import annotations

import os
from pathlib import Path

import boto3

from lifecycle_pipelines.resources import S3Resource


def test_put_bytes_encrypts_and_checksums(stack_info: object) -> None:
    s3 = S3Resource(
        bucket_prefix="lifecycle-local", sse_kms_key_id=os.environ["LIFECYCLE_KMS_KEY_ID"]
    )
    bucket = s3.bucket("staging")
    s3.put_bytes(bucket, "tests/put.bin", b"payload", storage_class="STANDARD_IA")
    head = boto3.client("s3").head_object(
        Bucket=bucket, Key="tests/put.bin", ChecksumMode="ENABLED"
    )
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == os.environ["LIFECYCLE_KMS_KEY_ID"]
    assert head["StorageClass"] == "STANDARD_IA"
    assert "ChecksumSHA256" in head


def test_upload_file_glacier(stack_info: object, tmp_path: Path) -> None:
    s3 = S3Resource(
        bucket_prefix="lifecycle-local", sse_kms_key_id=os.environ["LIFECYCLE_KMS_KEY_ID"]
    )
    path = tmp_path / "part.parquet"
    path.write_bytes(b"x" * 1024)
    head = s3.upload_file(path, s3.bucket("archive"), "tests/part.parquet", storage_class="GLACIER")
    assert head["StorageClass"] == "GLACIER"
    assert head["ServerSideEncryption"] == "aws:kms"
    assert S3Resource.uri("b", "k/v") == "s3://b/k/v"

"""Amazon S3 with SSE-KMS and S3 checksums on every write."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig
from pydantic import Field

from lifecycle_pipelines.resources.aws import AwsResource


class S3Resource(AwsResource):
    """S3 buckets of one environment, named `{bucket_prefix}-{suffix}`.

    Every object written through this resource is encrypted with SSE-KMS under `sse_kms_key_id`
    and carries an S3 checksum, so S3 rejects a corrupted upload.
    """

    bucket_prefix: str = Field(
        default="lifecycle-local",
        description="Prefix of every bucket name, e.g. `shop-production` gives shop-production-archive.",
    )
    sse_kms_key_id: str | None = Field(
        default=None,
        description="KMS key id, ARN or alias for SSE-KMS; None leaves the bucket default.",
    )
    checksum_algorithm: str = Field(
        default="SHA256", description="S3 checksum algorithm for uploads (CRC32C, SHA256, ...)."
    )
    multipart_threshold_mib: int = Field(
        default=64, description="Files above this size are uploaded in parallel parts."
    )

    def bucket(self, suffix: str) -> str:
        """The full bucket name for a bucket suffix such as `archive` or `staging`."""
        return f"{self.bucket_prefix}-{suffix}"

    def encryption_args(self) -> dict[str, Any]:
        """The SSE-KMS arguments for a PutObject or upload call."""
        if self.sse_kms_key_id is None:
            return {}
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.sse_kms_key_id}

    def object_args(self, storage_class: str, content_type: str) -> dict[str, Any]:
        """The arguments every write of an object carries: storage class, content type, the
        checksum algorithm and SSE-KMS."""
        return {
            "StorageClass": storage_class,
            "ContentType": content_type,
            "ChecksumAlgorithm": self.checksum_algorithm,
            **self.encryption_args(),
        }

    def put_bytes(
        self,
        bucket: str,
        key: str,
        body: bytes,
        *,
        storage_class: str = "STANDARD",
        content_type: str = "application/octet-stream",
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """PutObject with SSE-KMS and a checksum; returns the S3 response (VersionId, ETag, ...)."""
        args = {**self.object_args(storage_class, content_type), **(extra or {})}
        return dict(self.client("s3").put_object(Bucket=bucket, Key=key, Body=body, **args))

    def put_file(
        self,
        path: Path,
        bucket: str,
        key: str,
        *,
        storage_class: str = "STANDARD",
        content_type: str = "application/octet-stream",
    ) -> None:
        """Upload a local file with SSE-KMS and a checksum: one PutObject below the multipart
        threshold (no transfer-manager threads to start), parallel parts above it."""
        client = self.client("s3")
        extra = self.object_args(storage_class, content_type)
        threshold = self.multipart_threshold_mib * 1024 * 1024
        if path.stat().st_size < threshold:
            with path.open("rb") as body:
                client.put_object(Bucket=bucket, Key=key, Body=body, **extra)
            return
        config = TransferConfig(multipart_threshold=threshold)
        client.upload_file(str(path), bucket, key, ExtraArgs=extra, Config=config)

    def upload_file(
        self, path: Path, bucket: str, key: str, *, storage_class: str = "STANDARD"
    ) -> dict[str, Any]:
        """Upload a local file (see `put_file`); returns HeadObject of the result."""
        self.put_file(path, bucket, key, storage_class=storage_class)
        client = self.client("s3")
        return dict(client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED"))

    @staticmethod
    def uri(bucket: str, key: str) -> str:
        """`s3://bucket/key`."""
        return f"s3://{bucket}/{key}"

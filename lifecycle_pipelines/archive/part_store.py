"""Where an archive run's files go in S3: every closed part (the policy's storage class,
SSE-KMS, a SHA-256 that S3 checks) with its figures read back from the file, the round's
purge-keys object, and the manifest entries of the stored parts."""

from __future__ import annotations

import json
import logging
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lifecycle_pipelines.archive import manifest
from lifecycle_pipelines.archive.columns import TableShape
from lifecycle_pipelines.archive.crypto import ENCRYPTION_SCHEME, PERSONAL_COLUMN
from lifecycle_pipelines.archive.extract import StagedPart
from lifecycle_pipelines.archive.plan import (
    ARCHIVE_BUCKET_SUFFIX,
    ArchiveMonth,
    keys_object_key,
    object_key,
)
from lifecycle_pipelines.archive.stats import ReconStats
from lifecycle_pipelines.archive.verify import ObjectFigures, file_figures
from lifecycle_pipelines.policy import DataTypePolicy
from lifecycle_pipelines.resources.s3 import S3Resource

PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"


@dataclass(frozen=True)
class StoredPart:
    """A part once uploaded: what S3 answered, and the figures read back from the file."""

    part: StagedPart
    sha256: str  # base64, as S3 reports ChecksumSHA256
    version_id: str | None
    figures: ObjectFigures


@dataclass
class ArchivedTable:
    """The parts of one table of the partition, their uploads and their source figures."""

    shape: TableShape
    parts: list[StagedPart]
    source: list[ReconStats]
    stored: list[Future[StoredPart]] = field(default_factory=list)


class PartStore:
    """The archive bucket of one data type's month."""

    def __init__(
        self,
        s3: S3Resource,
        policy: DataTypePolicy,
        data_type: str,
        month: ArchiveMonth,
        logger: logging.Logger | Any,
    ) -> None:
        self.s3 = s3
        self.policy = policy
        self.data_type = data_type
        self.month = month
        self.log = logger
        self.bucket = s3.bucket(ARCHIVE_BUCKET_SUFFIX)

    @property
    def storage_class(self) -> str:
        return self.policy.archive_storage_class or "STANDARD"

    def key(self, table: str, part: int) -> str:
        """The object key of a table's part of the month."""
        return object_key(self.policy, table, self.month.month, part)

    def file_name(self, table: str, part: int) -> str:
        """The local file name of a part (its object key's last segment)."""
        return Path(self.key(table, part)).name

    def file_metadata(self, shape: TableShape) -> dict[str, str]:
        """The Parquet key-value metadata of a table's parts: what they hold and, for personal
        columns, how they are encrypted."""
        metadata = {
            "lifecycle.data_type": self.data_type,
            "lifecycle.table": shape.table,
            "lifecycle.partition_month": self.month.month.isoformat(),
            "lifecycle.primary_key": shape.primary_key,
        }
        if shape.personal_columns:
            metadata.update(
                {
                    "lifecycle.encryption": ENCRYPTION_SCHEME,
                    "lifecycle.subject_column": shape.subject_column or "",
                    "lifecycle.personal_columns": json.dumps(
                        [[c, str(shape.column(c).arrow_type)] for c in shape.personal_columns]
                    ),
                    "lifecycle.personal_column": PERSONAL_COLUMN,
                }
            )
        return metadata

    def store(self, shape: TableShape, part: StagedPart) -> StoredPart:
        """Upload one closed part and read its figures back from the file."""
        key = self.key(shape.table, part.part)
        _, checksum = part.sha256()
        response = self._put(part.path, key, self.storage_class)
        self.log.info(
            f"uploaded {self.s3.uri(self.bucket, key)} ({part.rows} rows, "
            f"{part.size_bytes} bytes, {self.storage_class})"
        )
        return StoredPart(part, checksum, response.get("VersionId"), file_figures(part.path, shape))

    def _put(self, path: Path, key: str, storage_class: str) -> dict[str, Any]:
        """One PutObject of a local file (never multipart: S3's SHA-256 of the object must be
        the file's own, which verification compares); returns S3's answer."""
        # SHA-256 whatever the resource's algorithm: botocore computes it over the bytes it
        # sends and S3 checks it (a precomputed ChecksumSHA256 header would be ignored by moto)
        args = {
            **self.s3.object_args(storage_class, PARQUET_CONTENT_TYPE),
            "ChecksumAlgorithm": "SHA256",
        }
        with path.open("rb") as body:
            response = self.s3.client("s3").put_object(
                Bucket=self.bucket, Key=key, Body=body, **args
            )
        return dict(response)

    def upload_keys(self, path: Path, round_number: int) -> tuple[str, str, str | None]:
        """Upload a round's purge-keys object; returns its bucket, key and version."""
        key = keys_object_key(self.policy, self.data_type, self.month.month, round_number)
        response = self._put(path, key, "STANDARD")
        return self.bucket, key, response.get("VersionId")

    def entries(self, tables: list[ArchivedTable]) -> list[manifest.ObjectEntry]:
        """The manifest entries of every uploaded part (waits for the uploads)."""
        entries = []
        for archived in tables:
            for part, stats, future in zip(
                archived.parts, archived.source, archived.stored, strict=True
            ):
                stored = future.result()
                entries.append(
                    manifest.ObjectEntry(
                        table_name=archived.shape.table,
                        part=part.part,
                        bucket=self.bucket,
                        object_key=self.key(archived.shape.table, part.part),
                        version_id=stored.version_id,
                        storage_class=self.storage_class,
                        row_count=part.rows,
                        size_bytes=part.size_bytes,
                        sha256=stored.sha256,
                        pk_min=part.pk_min,
                        pk_max=part.pk_max,
                        pk_sum=stats.pk_sum,
                        pk_hash_sum=stats.pk_hash_sum,
                        money_sums=stats.money_text(),
                        subjects=dict(part.subjects),
                    )
                )
        return entries

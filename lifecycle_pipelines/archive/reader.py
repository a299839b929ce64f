"""Reading archived objects back: readability (Glacier restore state), download, decryption.

An object in GLACIER or DEEP_ARCHIVE is readable only while a restored copy exists; S3 then
answers HeadObject with `Restore: ongoing-request="false", expiry-date=...`. Decryption restores
the personal columns for subjects whose key still exists and leaves them NULL for erased ones.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lifecycle_pipelines.archive.crypto import (
    PERSONAL_COLUMN,
    SubjectKeyring,
    decrypt_personal,
    subject_ids,
)
from lifecycle_pipelines.archive.manifest import ObjectEntry

ARCHIVE_CLASSES = ("GLACIER", "DEEP_ARCHIVE")


@dataclass(frozen=True)
class Readability:
    """Whether an object's bytes can be read now, and why not."""

    readable: bool
    storage_class: str
    restore: str | None

    @property
    def reason(self) -> str:
        if self.readable:
            return "readable"
        if self.restore and 'ongoing-request="true"' in self.restore:
            return "restore in progress"
        return f"in {self.storage_class}; request a restore first"


def readability(s3_client: Any, entry: ObjectEntry) -> Readability:
    """HeadObject of the recorded version: readable unless archived and not restored."""
    return object_readability(s3_client, entry.bucket, entry.object_key, entry.version_id)


def object_readability(
    s3_client: Any, bucket: str, key: str, version_id: str | None
) -> Readability:
    """HeadObject of one version: readable unless archived and not restored."""
    args = {"Bucket": bucket, "Key": key}
    if version_id:
        args["VersionId"] = version_id
    head = s3_client.head_object(**args)
    storage_class = head.get("StorageClass", "STANDARD")
    restore = head.get("Restore")
    restored = restore is not None and 'ongoing-request="false"' in restore
    readable = storage_class not in ARCHIVE_CLASSES or restored
    return Readability(readable, storage_class, restore)


def request_restore(s3_client: Any, entry: ObjectEntry, days: int, tier: str) -> bool:
    """Ask S3 for a temporary restored copy; False when one is already in progress."""
    args = {
        "Bucket": entry.bucket,
        "Key": entry.object_key,
        "RestoreRequest": {"Days": days, "GlacierJobParameters": {"Tier": tier}},
    }
    if entry.version_id:
        args["VersionId"] = entry.version_id
    try:
        s3_client.restore_object(**args)
    except s3_client.exceptions.ClientError as err:
        if err.response.get("Error", {}).get("Code") == "RestoreAlreadyInProgress":
            return False
        raise
    return True


def download(s3_client: Any, entry: ObjectEntry) -> bytes:
    """The bytes of the recorded version (raises InvalidObjectState when not restored)."""
    args = {"Bucket": entry.bucket, "Key": entry.object_key}
    if entry.version_id:
        args["VersionId"] = entry.version_id
    return bytes(s3_client.get_object(**args)["Body"].read())


def read_parquet(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data))


def decrypt_table(table: pa.Table, keyring: SubjectKeyring) -> pa.Table:
    """The archived table with personal columns decrypted where the subject's key exists."""
    metadata = table.schema.metadata or {}
    if PERSONAL_COLUMN not in table.column_names or b"lifecycle.personal_columns" not in metadata:
        return table
    subject_column = metadata[b"lifecycle.subject_column"].decode()
    fields = [
        pa.field(name, _arrow_type(type_text))
        for name, type_text in json.loads(metadata[b"lifecycle.personal_columns"])
    ]
    keys = keyring.keys(subject_ids(table.column(subject_column)), create=False)
    return decrypt_personal(
        table,
        table_name=metadata[b"lifecycle.table"].decode(),
        primary_key=metadata[b"lifecycle.primary_key"].decode(),
        subject_column=subject_column,
        personal_fields=fields,
        keys=keys,
    )


def _arrow_type(text: str) -> pa.DataType:
    simple = {
        "string": pa.string(),
        "int64": pa.int64(),
        "int32": pa.int32(),
        "date32[day]": pa.date32(),
    }
    return simple.get(text, pa.string())

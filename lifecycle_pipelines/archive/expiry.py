"""Retention expiry: archived objects past the policy's retention period are deleted with every
version and delete marker, unless S3 Object Lock forbids it (a legal hold, or a retention date
still in the future), in which case the object is recorded as `held` with the reason.

Only purged partitions expire: a verified partition whose rows are still in the source is
reported instead, so the archive copy never disappears before the source rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from lifecycle_pipelines.archive import manifest
from lifecycle_pipelines.archive.plan import keys_folder, month_folder
from lifecycle_pipelines.policy import DataTypePolicy

log = logging.getLogger(__name__)


@dataclass
class ExpiryReport:
    """What one expiry pass did."""

    partitions_expired: list[str] = field(default_factory=list)
    objects_deleted: int = 0
    versions_deleted: int = 0
    held: list[str] = field(default_factory=list)
    not_purged: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)  # partitions another run held: next pass


def expires_on(policy: DataTypePolicy, month: date) -> date | None:
    """The first day a month's archive may be deleted; None when kept indefinitely."""
    period = policy.retention_period
    if period.indefinite:
        return None
    if period.unit in ("mo", "y"):
        months = month.year * 12 + month.month - 1 + 1 + period.months()
        return date(months // 12, months % 12 + 1, 1)
    next_month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return next_month + timedelta(days=period.approx_days())


def object_versions(client: Any, bucket: str, key: str) -> list[dict[str, Any]]:
    """Every version and delete marker of exactly `key`."""
    found: list[dict[str, Any]] = []
    paginator = client.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket, Prefix=key):
        for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
            if item["Key"] == key:
                found.append(item)
    return found


def lock_reason(client: Any, bucket: str, key: str, version: dict[str, Any]) -> str | None:
    """Why Object Lock forbids deleting this version now, or None.

    HeadObject reports the legal hold and retention of a version in any storage class (the
    dedicated GetObjectLegalHold call is refused for GLACIER objects by some implementations).
    Delete markers carry no lock.
    """
    if "Size" not in version and "ETag" not in version:
        return None  # a delete marker
    head = client.head_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])
    if head.get("ObjectLockLegalHoldStatus") == "ON":
        return "legal hold"
    until = head.get("ObjectLockRetainUntilDate")
    if until is not None and until > datetime.now(UTC):
        return f"object lock {head.get('ObjectLockMode', '')} retention until {until:%Y-%m-%d}"
    return None


def delete_unlocked_versions(
    client: Any, bucket: str, key: str, keep_version: str | None = None
) -> tuple[int, int]:
    """Delete every version of `key` except `keep_version` and those Object Lock protects;
    returns (versions deleted, versions kept by Object Lock)."""
    deleted = kept = 0
    for version in object_versions(client, bucket, key):
        if keep_version is not None and version["VersionId"] == keep_version:
            continue
        if lock_reason(client, bucket, key, version):
            kept += 1
            continue
        client.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])
        deleted += 1
    return deleted, kept


def current_keys(client: Any, bucket: str, prefix: str) -> list[str]:
    """The keys of the current objects under `prefix`."""
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys += [item["Key"] for item in page.get("Contents", [])]
    return keys


def delete_strays(client: Any, bucket: str, prefix: str, keep: set[str]) -> list[str]:
    """Delete every version of the objects under `prefix` whose key is not in `keep`; returns
    the keys removed. For a month's folder: parts of an earlier, unverified attempt that wrote
    more parts than the verified one (Athena reads every current object under a partition's
    location). Only current keys are listed (one cheap listing when there is nothing to do);
    a version Object Lock protects is left, with a warning."""
    strays = [key for key in current_keys(client, bucket, prefix) if key not in keep]
    for key in strays:
        _, kept = delete_unlocked_versions(client, bucket, key)
        if kept:
            log.warning("s3://%s/%s: %d stray versions kept by Object Lock", bucket, key, kept)
    return sorted(strays)


def expire_archives(
    conn: psycopg.Connection[Any],
    client: Any,
    policies: dict[str, DataTypePolicy],
    today: date,
) -> ExpiryReport:
    """Delete every object of every partition past its retention (see the module docstring)."""
    report = ExpiryReport()
    for data_type, policy in policies.items():
        rows = conn.execute(
            "SELECT partition_month, state, keys_bucket, round"
            " FROM lifecycle.archive_partitions WHERE data_type = %s"
            " AND (state IN ('verified', 'purged') OR (state = 'written' AND round > 0))"
            " ORDER BY partition_month",
            (data_type,),
        ).fetchall()
        for month, state, keys_bucket, round_ in rows:
            due = expires_on(policy, month)
            if due is None or due > today:
                continue
            label = f"{data_type} {month:%Y-%m}"
            if state != "purged":  # verified, or a late round not finished: its rows are
                report.not_purged.append(  # still in the source
                    label if state == "verified" else f"{label} (late round {round_} written)"
                )
                continue
            try:
                manifest.lock_partition(conn, data_type, month)
            except manifest.PartitionBusy:
                report.busy.append(label)  # an archive or purge of it is running: next pass
                continue
            try:
                folders = [
                    month_folder(policy, table, month)
                    for table in (policy.table, *(child.table for child in policy.children))
                ]
                keys = (keys_bucket, keys_folder(policy, data_type, month))
                _expire_partition(conn, client, data_type, month, label, keys, folders, report)
            finally:
                manifest.unlock_partition(conn, data_type, month)
    return report


def _expire_partition(
    conn: psycopg.Connection[Any],
    client: Any,
    data_type: str,
    month: date,
    label: str,
    keys_location: tuple[str | None, str],
    folders: list[str],
    report: ExpiryReport,
) -> None:
    """Delete one partition's objects (every version) unless a hold keeps one; then whatever
    else its tables' month folders hold (objects the manifest does not list: a round that
    failed before its commit), its keys objects, every round's (bucket, folder: the archive
    bucket), and mark it expired. Runs under the partition's lock."""
    keys_bucket, folder = keys_location
    held_here = False
    entries = manifest.get_objects(conn, data_type, month)
    keys_bucket = keys_bucket or next((e.bucket for e in entries), None)
    for entry in entries:
        if entry.state not in ("verified", "purged", "held"):
            continue
        versions = object_versions(client, entry.bucket, entry.object_key)
        hold = manifest.object_hold(conn, entry.bucket, entry.object_key)
        reasons = [f"legal hold {hold} (lifecycle)"] if hold is not None else []
        reasons += [
            r for v in versions if (r := lock_reason(client, entry.bucket, entry.object_key, v))
        ]
        if reasons:
            held_here = True
            report.held.append(f"s3://{entry.bucket}/{entry.object_key}: {reasons[0]}")
            conn.execute(
                "UPDATE lifecycle.archive_objects SET state = 'held', hold_reason = %s"
                " WHERE object_id = %s",
                (reasons[0], entry.object_id),
            )
            continue
        for version in versions:
            client.delete_object(
                Bucket=entry.bucket, Key=entry.object_key, VersionId=version["VersionId"]
            )
            report.versions_deleted += 1
        with conn.transaction():
            conn.execute(
                "UPDATE lifecycle.archive_objects SET state = 'expired',"
                " expired_at = now(), hold_reason = NULL WHERE object_id = %s",
                (entry.object_id,),
            )
            conn.execute(
                "DELETE FROM lifecycle.subject_index WHERE object_id = %s",
                (entry.object_id,),
            )
        report.objects_deleted += 1
        log.info("expired s3://%s/%s", entry.bucket, entry.object_key)
    if held_here:
        return
    if keys_bucket and not _expire_unlisted(conn, client, keys_bucket, folders, entries, report):
        return
    if keys_bucket:
        paginator = client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=keys_bucket, Prefix=folder):
            for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                client.delete_object(
                    Bucket=keys_bucket, Key=item["Key"], VersionId=item["VersionId"]
                )
                report.versions_deleted += 1
    conn.execute(
        "UPDATE lifecycle.archive_partitions SET state = 'expired', expired_at = now()"
        " WHERE data_type = %s AND partition_month = %s",
        (data_type, month),
    )
    report.partitions_expired.append(label)


def _expire_unlisted(
    conn: psycopg.Connection[Any],
    client: Any,
    bucket: str,
    folders: list[str],
    entries: list[manifest.ObjectEntry],
    report: ExpiryReport,
) -> bool:
    """Delete every version of the objects in the partition's month folders that the manifest
    does not list (past retention like the rest of the month); False if a hold or Object Lock
    keeps one (the partition then stays, reported)."""
    recorded = {entry.object_key for entry in entries}
    for folder in folders:
        for key in sorted(_keys_with_versions(client, bucket, folder) - recorded):
            hold = manifest.object_hold(conn, bucket, key)
            if hold is not None:
                report.held.append(f"s3://{bucket}/{key}: legal hold {hold} (lifecycle)")
                return False
            deleted, kept = delete_unlocked_versions(client, bucket, key)
            report.versions_deleted += deleted
            if kept:
                report.held.append(f"s3://{bucket}/{key}: {kept} versions under Object Lock")
                return False
            log.warning("expired s3://%s/%s, an object the manifest did not list", bucket, key)
    return True


def _keys_with_versions(client: Any, bucket: str, prefix: str) -> set[str]:
    """Every key under `prefix` that has a version or a delete marker (a key whose current
    version is a delete marker still holds its older versions)."""
    keys: set[str] = set()
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        keys |= {item["Key"] for item in page.get("Versions", []) + page.get("DeleteMarkers", [])}
    return keys

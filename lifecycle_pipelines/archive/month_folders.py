"""A month's folders in the archive bucket (each table's parts, and the keys objects) against
the manifest: what the manifest accounts for, what an unverified attempt left behind, and what
only S3 still knows.

Objects of a round that was never verified may be overwritten or removed: the rows they hold
are still in the source (the purge deletes only verified rounds' rows). A verified round leaves
a marker in the keys folder (`verified-round-N.json`, listing its objects), written once the
manifest says verified and before any purge of it. So S3 knows which rounds hold purged rows
even when the control database does not (a restore from an older backup): a round refuses to
start when a marker of it or of a later round exists (`refuse_unknown`), and a run that only
confirms a month reports unlisted objects instead of removing them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lifecycle_pipelines.archive import manifest
from lifecycle_pipelines.archive.columns import TableShape
from lifecycle_pipelines.archive.expiry import current_keys, delete_strays
from lifecycle_pipelines.archive.plan import (
    ARCHIVE_BUCKET_SUFFIX,
    ArchiveMonth,
    keys_folder,
    keys_object_key,
    month_folder,
)
from lifecycle_pipelines.policy import DataTypePolicy
from lifecycle_pipelines.resources.s3 import S3Resource

_MARKER = re.compile(r"verified-round-(\d+)\.json")


class UnknownObjects(RuntimeError):
    """S3 records a verified round of the month that the manifest does not know; nothing was
    written."""


@dataclass
class MonthFolders:
    """The folders of one month of a data type (its `tables`) in the archive `bucket`."""

    s3: S3Resource
    bucket: str
    policy: DataTypePolicy
    month: ArchiveMonth
    tables: list[str]
    log: Any

    @classmethod
    def of(
        cls, s3: S3Resource, policy: DataTypePolicy, month: ArchiveMonth, shapes: list[TableShape],
        log: Any,
    ) -> MonthFolders:  # fmt: skip
        """The folders of `month` for the tables of `shapes`, in the archive bucket."""
        bucket = s3.bucket(ARCHIVE_BUCKET_SUFFIX)
        return cls(s3, bucket, policy, month, [shape.table for shape in shapes], log)

    @property
    def keys_folder(self) -> str:
        return keys_folder(self.policy, self.month.data_type, self.month.month)

    @property
    def folders(self) -> list[str]:
        """Each table's folder (the Glue partition locations), then the keys folder."""
        parts = [month_folder(self.policy, table, self.month.month) for table in self.tables]
        return [*parts, self.keys_folder]

    def marker_key(self, round_number: int) -> str:
        return f"{self.keys_folder}verified-round-{round_number}.json"

    def accounted(
        self, conn: Any, entries: list[manifest.ObjectEntry], round_number: int
    ) -> set[str]:
        """The keys the manifest accounts for: every recorded object of any round, `entries`,
        and every round's keys object and marker up to `round_number`."""
        month = self.month.month
        recorded = manifest.get_objects(conn, self.month.data_type, month)
        keep = {entry.object_key for entry in [*entries, *recorded]}
        for n in range(round_number + 1):
            keep |= {keys_object_key(self.policy, self.month.data_type, month, n)}
            keep |= {self.marker_key(n)}
        return keep

    def verified_rounds(self) -> list[int]:
        """The rounds whose markers S3 holds."""
        client = self.s3.client("s3")
        names = (
            key.removeprefix(self.keys_folder)
            for key in current_keys(client, self.bucket, self.keys_folder)
        )
        return sorted(int(m[1]) for name in names if (m := _MARKER.fullmatch(name)))

    def refuse_unknown(self, round_number: int) -> None:
        """Stop before round `round_number` writes anything when S3 records it or a later
        round as verified: the manifest (an older control database) has forgotten rounds whose
        objects may be the only copy of purged rows, which this round would overwrite or
        remove."""
        known = [n for n in self.verified_rounds() if n >= round_number]
        if known:
            raise UnknownObjects(
                f"{self.month.label}: S3 records round {known[-1]} of this month as verified "
                f"({self.s3.uri(self.bucket, self.marker_key(known[-1]))}, which lists its "
                f"objects) but the manifest does not know it: the control database is older than "
                "the archive. Nothing was written; its objects may be the only copy of purged "
                "rows: restore the manifest from the markers, or move the objects away, then run "
                "the month again"
            )

    def write_marker(self, round_number: int, entries: list[manifest.ObjectEntry]) -> None:
        """Record in S3 that `round_number` is verified, with its objects (after the manifest
        says so, before any purge of it)."""
        body = {
            "data_type": self.month.data_type,
            "partition_month": self.month.month.isoformat(),
            "round": round_number,
            "marked_at": datetime.now(UTC).isoformat(),
            "objects": [
                {"table": e.table_name, "part": e.part, "key": e.object_key,
                 "version_id": e.version_id, "sha256": e.sha256, "rows": e.row_count}
                for e in entries
            ],
        }  # fmt: skip
        self.s3.put_bytes(
            self.bucket,
            self.marker_key(round_number),
            json.dumps(body, sort_keys=True).encode(),
            content_type="application/json",
        )

    def ensure_marker(self, conn: Any, round_number: int) -> None:
        """Write the marker of a verified or purged round if it is missing (a partition
        verified before markers existed, or a crash right after the manifest's update)."""
        if round_number in self.verified_rounds():
            return
        entries = [
            e
            for e in manifest.get_objects(conn, self.month.data_type, self.month.month)
            if e.round == round_number
        ]
        self.write_marker(round_number, entries)

    def count_unlisted(self, conn: Any, round_number: int) -> int:
        """Count (and report, never delete) objects the manifest does not list in a verified
        or purged month's folders."""
        client = self.s3.client("s3")
        keep = self.accounted(conn, [], round_number)
        unlisted = [
            key for folder in self.folders for key in current_keys(client, self.bucket, folder)
            if key not in keep
        ]  # fmt: skip
        if unlisted:
            self.log.warning(
                f"{self.month.label}: {len(unlisted)} objects in the month's folders are not in "
                f"the manifest (first: {self.s3.uri(self.bucket, unlisted[0])}); left as they "
                "are: a later round that failed before its commit, or the control database is "
                "older than the archive. Check before deleting them"
            )
        return len(unlisted)

    def delete_strays(
        self, conn: Any, entries: list[manifest.ObjectEntry], round_number: int
    ) -> None:
        """Once a round's objects (`entries`) are verified, remove what the manifest does not
        list: parts of an earlier attempt that failed before verification and wrote more
        parts, keys objects of later rounds' attempts (`refuse_unknown` made sure that no
        verified round is among them). Every recorded object stays."""
        client = self.s3.client("s3")
        keep = self.accounted(conn, entries, round_number)
        for folder in self.folders:
            removed = delete_strays(client, self.bucket, folder, keep)
            if removed:
                self.log.warning(
                    f"{self.month.label}: removed {len(removed)} stray objects under "
                    f"{self.s3.uri(self.bucket, folder)} left by an earlier attempt"
                )

"""A month's folders in the archive bucket (each table's parts, and the keys objects) against
the manifest: what the manifest accounts for, what an earlier attempt of the round left behind,
and what nobody recorded.

Objects the manifest does not list are removed only when a round's objects are verified, and
only when an earlier recorded attempt of that round can have left them (`refuse_unknown` stops
a round before it writes anything otherwise); a run that only confirms a month reports them.
Older unlisted objects mean the control database is older than the archive (a restore): they
may be the only copy of purged rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from lifecycle_pipelines.archive import manifest
from lifecycle_pipelines.archive.expiry import current_keys, current_objects, delete_strays
from lifecycle_pipelines.archive.plan import (
    ArchiveMonth,
    keys_folder,
    keys_object_key,
    month_folder,
)
from lifecycle_pipelines.policy import DataTypePolicy
from lifecycle_pipelines.resources.s3 import S3Resource

# S3's clock against the control database's, and S3's whole-second LastModified: objects a
# recorded attempt uploaded are at most this much "older" than the attempt's start
ATTEMPT_CLOCK_MARGIN = timedelta(seconds=60)


class UnknownObjects(RuntimeError):
    """The month's folders hold objects the manifest does not list and no recorded attempt
    left; nothing was written."""


@dataclass
class MonthFolders:
    """The folders of one month of a data type (its `tables`) in the archive `bucket`."""

    s3: S3Resource
    bucket: str
    policy: DataTypePolicy
    month: ArchiveMonth
    tables: list[str]
    log: Any

    @property
    def folders(self) -> list[str]:
        """Each table's folder (the Glue partition locations), then the keys folder."""
        month = self.month.month
        parts = [month_folder(self.policy, table, month) for table in self.tables]
        return [*parts, keys_folder(self.policy, self.month.data_type, month)]

    def accounted(
        self, conn: Any, entries: list[manifest.ObjectEntry], round_number: int
    ) -> set[str]:
        """The keys the manifest accounts for: every recorded object of any round, `entries`,
        and every round's keys object up to `round_number`."""
        month = self.month.month
        recorded = manifest.get_objects(conn, self.month.data_type, month)
        keep = {entry.object_key for entry in [*entries, *recorded]}
        return keep | {
            keys_object_key(self.policy, self.month.data_type, month, n)
            for n in range(round_number + 1)
        }

    def refuse_unknown(self, conn: Any, round_number: int, first_attempt: datetime) -> None:
        """Stop before anything is written when the folders hold objects the manifest does
        not list that no recorded attempt of this round can have left (older than its first
        attempt): this round would overwrite or remove what may be the only copy of purged
        rows."""
        client = self.s3.client("s3")
        keep = self.accounted(conn, [], round_number - 1)
        since = first_attempt - ATTEMPT_CLOCK_MARGIN
        unknown = sorted(
            key
            for folder in self.folders
            for key, modified in current_objects(client, self.bucket, folder).items()
            if key not in keep and modified < since
        )
        if unknown:
            raise UnknownObjects(
                f"{self.month.label}: {len(unknown)} objects in the month's folders are not in "
                f"the manifest and older than this round's first attempt (first: "
                f"{self.s3.uri(self.bucket, unknown[0])}): the control database may be older than "
                "the archive. Nothing was written; they may be the only copy of purged rows: "
                "check them and move them away, then run the month again"
            )

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
        parts, keys objects of later rounds' attempts. Every recorded object stays."""
        client = self.s3.client("s3")
        keep = self.accounted(conn, entries, round_number)
        for folder in self.folders:
            removed = delete_strays(client, self.bucket, folder, keep)
            if removed:
                self.log.warning(
                    f"{self.month.label}: removed {len(removed)} stray objects under "
                    f"{self.s3.uri(self.bucket, folder)} left by an earlier attempt"
                )

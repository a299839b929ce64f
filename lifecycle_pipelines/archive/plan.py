"""Which month an archive run covers, whether it may run, and where its objects go.

Pure functions: the partition key, the eligibility rule (older than the policy's active window),
and deterministic object keys `<service>/<entity>/year=YYYY/month=MM/<entity>-part-NNNNN.parquet`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from lifecycle_pipelines.policy import DataTypePolicy

ARCHIVE_BUCKET_SUFFIX = "archive"


class PartitionError(ValueError):
    """The partition key is malformed, unknown or not eligible; nothing was done."""


@dataclass(frozen=True)
class ArchiveMonth:
    """One calendar month of one data type, as archived by one partition run."""

    data_type: str
    month: date  # first day of the month

    @classmethod
    def parse(cls, data_type: str, partition_key: str) -> ArchiveMonth:
        """Parse a Dagster monthly partition key (`2025-01-01`)."""
        try:
            day = date.fromisoformat(partition_key)
        except ValueError:
            raise PartitionError(
                f"partition_key: expected a month like 2025-01-01, got {partition_key!r}"
            ) from None
        if day.day != 1:
            raise PartitionError(
                f"partition_key: monthly partitions start on the 1st, got {partition_key!r}"
            )
        return cls(data_type, day)

    @property
    def start(self) -> datetime:
        return datetime(self.month.year, self.month.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        year, month = divmod(self.month.year * 12 + self.month.month, 12)
        return datetime(year, month + 1, 1, tzinfo=UTC)

    @property
    def label(self) -> str:
        return f"{self.data_type} {self.month:%Y-%m}"


def check_eligible(month: ArchiveMonth, policy: DataTypePolicy, today: date) -> None:
    """Raise PartitionError unless the month is older than the policy's active window on `today`."""
    oldest_active = policy.oldest_active_month(today)
    if month.month >= oldest_active:
        raise PartitionError(
            f"partition_key: {month.month:%Y-%m} of {month.data_type} is inside the active window "
            f"({policy.active_window}, oldest active month {oldest_active:%Y-%m} on {today}); "
            f"months up to {_previous(oldest_active):%Y-%m} may be archived"
        )


def newest_eligible_month(policy: DataTypePolicy, today: date) -> date:
    """The most recent month that may be archived on `today` (what the monthly schedule runs)."""
    return _previous(policy.oldest_active_month(today))


def _previous(month: date) -> date:
    return date(month.year - 1, 12, 1) if month.month == 1 else date(month.year, month.month - 1, 1)


def object_key(policy: DataTypePolicy, entity: str, month: date, part: int) -> str:
    """The deterministic key of part `part` of `entity` for `month`."""
    return (
        f"{policy.service}/{entity}/year={month:%Y}/month={month:%m}/"
        f"{entity}-part-{part:05d}.parquet"
    )


def month_folder(policy: DataTypePolicy, entity: str, month: date) -> str:
    """The folder (Glue partition location) of `entity`'s objects of `month`."""
    return object_key(policy, entity, month, 0).rsplit("/", 1)[0] + "/"


def entity_prefix(policy: DataTypePolicy, entity: str) -> str:
    """The key prefix of every archived month of `entity` (the Glue table location)."""
    return f"{policy.service}/{entity}/"


KEYS_PREFIX = "_purge_keys"


def keys_folder(policy: DataTypePolicy, data_type: str, month: date) -> str:
    """The folder of a month's keys objects (one per round), beside the archive."""
    return f"{KEYS_PREFIX}/{policy.service}/{data_type}/year={month:%Y}/month={month:%m}/"


def keys_object_key(policy: DataTypePolicy, data_type: str, month: date, round_: int) -> str:
    """The deterministic key of the keys object (the archived rows' keys and versions, what
    the purge deletes) of one round of a month: `keys.parquet`, then `keys-round-N.parquet`."""
    name = "keys.parquet" if round_ == 0 else f"keys-round-{round_}.parquet"
    return keys_folder(policy, data_type, month) + name

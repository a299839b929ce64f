"""The product sync: incremental by commit-safe high-water mark, deletes by tombstone and by
primary-key-set comparison, and a monthly rotation that never shows a half-built index.

`ProductSync.run(day)`:
- when the alias does not yet point at the index of `day`'s month (a new month, or the first
  run), **rotate**: create the month's index from the template, load every live product,
  replay tombstones, reconcile (count, and a checksum of id and updated_at, source against
  index) and only then swap the alias atomically. A failed reconciliation raises with the
  difference and leaves the alias where it was;
- otherwise **increment**: upsert the documents changed in [previous mark - overlap, mark),
  where the mark is commit-safe (see `documents.commit_safe_high_water`), delete soft-deleted
  ones, then delete every indexed id the source no longer has (hard deletes).
Bulk writes retry throttled documents and fail on any document refused for good.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import psycopg

from lifecycle_pipelines.resources.search.base import SearchBackend
from lifecycle_pipelines.search_sync.bulk import BulkFailure, BulkOutcome, bulk_with_retry
from lifecycle_pipelines.search_sync.documents import (
    all_documents,
    changed_documents,
    commit_safe_high_water,
    source_versions,
)
from lifecycle_pipelines.search_sync.index_config import (
    ISM_POLICY_ID,
    SynonymRule,
    alias_name,
    index_body,
    index_name,
    index_template,
    ism_policy,
)
from lifecycle_pipelines.search_sync.versions import VersionSet

log = logging.getLogger(__name__)
SEARCH_FIELDS = ("name", "description", "brand", "category")
SAMPLE_DOCUMENTS = 50_000  # documents kept per run for the schema and completeness checks


class ReconciliationError(RuntimeError):
    """The new index does not match the source; the alias was not moved."""


@dataclass(frozen=True)
class SyncSettings:
    """Tuning of the sync."""

    safety_lag: timedelta = timedelta(seconds=30)
    overlap: timedelta = timedelta(minutes=15)
    batch_size: int = 2_000
    max_retries: int = 5
    retry_base_seconds: float = 0.5


@dataclass
class Reconciliation:
    """Source against index: counts, checksums and a sample of the differences."""

    source_count: int
    index_count: int
    source_checksum: str
    index_checksum: str
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)

    @property
    def matches(self) -> bool:
        return self.source_count == self.index_count and self.source_checksum == self.index_checksum

    def describe(self) -> str:
        return (
            f"source {self.source_count} documents (checksum {self.source_checksum[:12]}), "
            f"index {self.index_count} (checksum {self.index_checksum[:12]}); "
            f"missing {self.missing[:10]}, extra {self.extra[:10]}, stale {self.stale[:10]}"
        )


@dataclass
class SyncReport:
    """What one run did (asset metadata)."""

    alias: str
    index: str
    rotated: bool = False
    upserted: int = 0
    soft_deleted: int = 0
    hard_deleted: int = 0
    tombstones_replayed: int = 0
    retries: int = 0
    low: datetime | None = None
    high: datetime | None = None
    reconciliation: Reconciliation | None = None
    seconds: float = 0.0
    index_versions: VersionSet | None = field(default=None, repr=False)
    source_versions: VersionSet | None = field(default=None, repr=False)
    sample: list[dict[str, Any]] = field(default_factory=list, repr=False)


def reconcile(source: VersionSet, index: VersionSet) -> Reconciliation:
    """Compare the source's (id, version) set with the index's."""
    return Reconciliation(
        source_count=len(source),
        index_count=len(index),
        source_checksum=str(source.checksum),
        index_checksum=str(index.checksum),
        missing=source.missing_from(index)[:50],
        extra=index.missing_from(source)[:50],
        stale=source.stale_in(index)[:50],
    )


def to_document(row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(id, source) of a product row (updated_at is already ISO text, as `source_versions`)."""
    doc = dict(row)
    del doc["deleted"]
    return str(doc["product_id"]), doc


class ProductSync:
    """Syncs products into the monthly index behind the `catalog-products` alias."""

    def __init__(
        self,
        backend: SearchBackend,
        shop: psycopg.Connection[Any],
        control: psycopg.Connection[Any],
        rules: list[SynonymRule],
        settings: SyncSettings | None = None,
        logger: logging.Logger | Any = log,
    ) -> None:
        self.backend = backend
        self.shop = shop
        self.control = control
        self.rules = rules
        self.settings = settings or SyncSettings()
        self.log = logger
        self.alias = alias_name()

    # -- state -----------------------------------------------------------------------------
    def _state(self) -> tuple[str, datetime] | None:
        row = self.control.execute(
            "SELECT index_name, high_water FROM lifecycle.search_sync_state WHERE alias = %s",
            (self.alias,),
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def _save_state(self, index: str, high: datetime) -> None:
        self.control.execute(
            "INSERT INTO lifecycle.search_sync_state (alias, index_name, high_water)"
            " VALUES (%s, %s, %s) ON CONFLICT (alias) DO UPDATE SET index_name ="
            " EXCLUDED.index_name, high_water = EXCLUDED.high_water, updated_at = now()",
            (self.alias, index, high),
        )

    def tombstones(self) -> list[str]:
        rows = self.control.execute(
            "SELECT doc_id FROM lifecycle.search_tombstones WHERE alias = %s ORDER BY doc_id",
            (self.alias,),
        ).fetchall()
        return [r[0] for r in rows]

    # -- writes ----------------------------------------------------------------------------
    def _upsert(self, index: str, docs: list[tuple[str, dict[str, Any]]]) -> BulkOutcome:
        return bulk_with_retry(
            lambda items: self.backend.bulk_upsert(index, items),
            docs,
            lambda item: item[0],
            max_retries=self.settings.max_retries,
            base_delay=self.settings.retry_base_seconds,
        )

    def _delete(self, index: str, ids: list[str]) -> BulkOutcome:
        return bulk_with_retry(
            lambda items: self.backend.bulk_delete(index, list(items)),
            ids,
            lambda item: item,
            max_retries=self.settings.max_retries,
            base_delay=self.settings.retry_base_seconds,
        )

    def _write(self, report: SyncReport, index: str, rows: Iterable[dict[str, Any]]) -> None:
        live: list[dict[str, Any]] = []
        gone: list[dict[str, Any]] = []
        for row in rows:
            (gone if row["deleted"] else live).append(row)
        errors = []
        if live:
            docs = [to_document(r) for r in live]
            room = SAMPLE_DOCUMENTS - len(report.sample)
            report.sample.extend(doc for _, doc in docs[: max(room, 0)])
            outcome = self._upsert(index, docs)
            report.upserted += outcome.written
            report.retries += outcome.retries
            errors.extend(outcome.errors)
        if gone:
            outcome = self._delete(index, [str(r["product_id"]) for r in gone])
            report.soft_deleted += len(gone)
            report.retries += outcome.retries
            errors.extend(outcome.errors)
        if errors:
            raise BulkFailure(errors)

    # -- the run ---------------------------------------------------------------------------
    def install_templates(self) -> None:
        """The ISM policy and the index template (idempotent)."""
        self.backend.put_lifecycle_policy(ISM_POLICY_ID, ism_policy())
        self.backend.put_index_template(self.alias, index_template(self.rules))

    def run(self, day: date) -> SyncReport:
        started = time.perf_counter()
        target = index_name(day)
        current = self.backend.alias_targets(self.alias)
        newest = max(current, default="")
        report = self.rotate(target) if target > newest else self.increment(newest)
        report.seconds = time.perf_counter() - started
        return report

    def rotate(self, index: str) -> SyncReport:
        """Build `index` fully, reconcile it, then point the alias at it."""
        report = SyncReport(self.alias, index, rotated=True)
        self.install_templates()
        if self.backend.index_exists(index):
            self.log.info(f"{index} exists from an unfinished rotation; rebuilding it")
            self.backend.delete_index(index)
        self.backend.create_index(index, index_body(self.rules))
        report.high = commit_safe_high_water(self.shop, self.settings.safety_lag)
        loaded = 0
        for batch in all_documents(self.shop, self.settings.batch_size):
            self._write(report, index, batch)
            loaded += len(batch)
            self.log.debug(f"{index}: {loaded} products loaded")
        replay = self.tombstones()
        if replay:
            self._delete(index, replay)
            report.tombstones_replayed = len(replay)
        self.backend.refresh(index)
        source = VersionSet.from_pairs(source_versions(self.shop)).without(replay)
        report.source_versions = source
        report.index_versions = VersionSet.from_pairs(self.backend.scan_field(index, "updated_at"))
        report.reconciliation = reconcile(source, report.index_versions)
        if not report.reconciliation.matches:
            raise ReconciliationError(
                f"{index} does not match the source; alias {self.alias} left on "
                f"{self.backend.alias_targets(self.alias) or 'nothing'}: "
                f"{report.reconciliation.describe()}"
            )
        self.backend.swap_alias(self.alias, index)
        self._save_state(index, report.high)
        self.log.info(f"{self.alias} now points at {index} ({report.upserted} documents)")
        return report

    def increment(self, index: str) -> SyncReport:
        """Apply the changes since the last mark, then remove hard-deleted products."""
        report = SyncReport(self.alias, index)
        state = self._state()
        report.high = commit_safe_high_water(self.shop, self.settings.safety_lag)
        report.low = (
            state[1] - self.settings.overlap
            if state is not None
            else datetime(1970, 1, 1, tzinfo=UTC)
        )
        for rows in changed_documents(self.shop, report.low, report.high, self.settings.batch_size):
            self._write(report, index, rows)
        self.backend.refresh(index)
        source = VersionSet.from_pairs(source_versions(self.shop))
        indexed = VersionSet.from_pairs(self.backend.scan_field(index, "updated_at"))
        gone = indexed.missing_from(source)
        if gone:
            outcome = self._delete(index, gone)
            if outcome.errors:
                raise BulkFailure(outcome.errors)
            report.hard_deleted = len(gone)
            # the engine confirmed each delete; the scan minus them is the index now (one scan
            # of the whole index per run instead of two)
            indexed = indexed.without(gone)
        self.backend.refresh(index)
        report.source_versions = source.without(self.tombstones())
        report.index_versions = indexed
        report.reconciliation = reconcile(report.source_versions, report.index_versions)
        self._save_state(index, report.high)
        return report

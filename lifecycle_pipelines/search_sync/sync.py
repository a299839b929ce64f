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

Documents travel as Arrow tables. A backend that can take them whole (`TableSink`: the local
tantivy engine) gets each batch as a table inside one bulk session and hands back ids and
versions as arrays; any other backend gets (id, source) pairs and is scanned document by
document. Both sides of the reconciliation are (id, version) arrays either way.
"""

from __future__ import annotations

import logging
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from lifecycle_pipelines.control import release_session_lock, try_session_lock
from lifecycle_pipelines.resources.search.base import BulkResult, SearchBackend
from lifecycle_pipelines.search_sync.bulk import (
    BulkFailure,
    BulkOutcome,
    bulk_table_with_retry,
    bulk_with_retry,
)
from lifecycle_pipelines.search_sync.documents import (
    all_documents,
    changed_documents,
    commit_safe_high_water,
    documents_by_id,
    source_versions,
    to_rows,
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
ID_COLUMN = "product_id"
VERSION_FIELD = "updated_at"


@runtime_checkable
class TableSink(Protocol):
    """What a backend offers beyond `SearchBackend` to load and read back whole batches."""

    def bulk_session(self, index: str) -> AbstractContextManager[None]:
        """Bulk writes to `index` inside the block are committed together (at the latest
        when it ends; `refresh` makes them visible)."""
        ...

    def bulk_upsert_table(self, index: str, table: pa.Table, id_column: str) -> BulkResult:
        """`bulk_upsert` of a table's rows: id from `id_column`, source from every column."""
        ...

    def scan_versions(self, index: str, field: str) -> tuple[np.ndarray, np.ndarray] | None:
        """Integer ids and date `field` in microseconds of every document, or None when
        `scan_field` has to be used."""
        ...


class SyncBusy(RuntimeError):
    """Another sync of the same alias holds its lock; nothing was changed."""


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


CONVERGE_ROUNDS = 2  # repair passes after a load before the reconciliation stands


@dataclass
class SyncReport:
    """What one run did (asset metadata)."""

    alias: str
    index: str
    rotated: bool = False
    upserted: int = 0
    soft_deleted: int = 0
    hard_deleted: int = 0
    repaired: int = 0  # documents rewritten because they differed from the source
    tombstones_replayed: int = 0
    retries: int = 0
    low: datetime | None = None
    high: datetime | None = None
    reconciliation: Reconciliation | None = None
    seconds: float = 0.0
    index_versions: VersionSet | None = field(default=None, repr=False)
    source_versions: VersionSet | None = field(default=None, repr=False)
    # the first SAMPLE_DOCUMENTS documents written, as Arrow tables (a few bytes a value, not
    # a Python dict a document): the batches of the schema and completeness checks
    sample: list[pa.Table] = field(default_factory=list, repr=False)

    @property
    def sampled(self) -> int:
        return sum(table.num_rows for table in self.sample)


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
    """(id, source) of a product row (updated_at is already ISO text)."""
    doc = dict(row)
    doc.pop("deleted", None)
    return str(doc[ID_COLUMN]), doc


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

    def _upsert_table(self, index: str, table: pa.Table) -> BulkOutcome:
        if isinstance(self.backend, TableSink):
            sink = self.backend
            return bulk_table_with_retry(
                lambda part: sink.bulk_upsert_table(index, part, ID_COLUMN),
                table,
                ID_COLUMN,
                max_retries=self.settings.max_retries,
                base_delay=self.settings.retry_base_seconds,
            )
        return self._upsert(index, [to_document(row) for row in to_rows(table)])

    def _session(self, index: str) -> AbstractContextManager[None]:
        if isinstance(self.backend, TableSink):
            return self.backend.bulk_session(index)
        return nullcontext()

    def _index_versions(self, index: str) -> VersionSet:
        """The (id, version) set of the index, from fast columns when the backend has them."""
        if isinstance(self.backend, TableSink):
            arrays = self.backend.scan_versions(index, VERSION_FIELD)
            if arrays is not None:
                return VersionSet.from_arrays(*arrays)
        return VersionSet.from_pairs(self.backend.scan_field(index, VERSION_FIELD))

    def _source_versions(self) -> VersionSet:
        return VersionSet.from_arrays(*source_versions(self.shop))

    def _write(self, report: SyncReport, index: str, table: pa.Table) -> None:
        deleted = table.column("deleted")
        live = table.filter(pc.invert(deleted)).drop_columns(["deleted"])
        gone = [str(i) for i in table.filter(deleted).column(ID_COLUMN).to_pylist()]
        errors = []
        if live.num_rows:
            room = SAMPLE_DOCUMENTS - report.sampled
            if room > 0:
                report.sample.append(live.slice(0, room))
            outcome = self._upsert_table(index, live)
            report.upserted += outcome.written
            report.retries += outcome.retries
            errors.extend(outcome.errors)
        if gone:
            outcome = self._delete(index, gone)
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
        """Rotate to the month's index if it is newer than the alias's, else apply the changes.

        One sync per alias at a time (a session advisory lock in the control database): a
        scheduled run and a backfill overlapping would otherwise both rotate, and one could
        delete the index the other is building."""
        started = time.perf_counter()
        lock = f"lifecycle.search_sync:{self.alias}"
        if not try_session_lock(self.control, lock):
            raise SyncBusy(f"alias {self.alias}: another sync is running; nothing was changed")
        try:
            target = index_name(day)
            current = self.backend.alias_targets(self.alias)
            newest = max(current, default="")
            report = self.rotate(target) if target > newest else self.increment(newest)
        finally:
            release_session_lock(self.control, lock)
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
        with self._session(index):
            for batch in all_documents(self.shop, self.settings.batch_size):
                self._write(report, index, batch)
                loaded += batch.num_rows
                self.log.debug(f"{index}: {loaded} products loaded")
            replay = self.tombstones()
            if replay:
                self._delete(index, replay)
                report.tombstones_replayed = len(replay)
        self.backend.refresh(index)
        reconciliation = self._converge(index, report, replay)
        if not reconciliation.matches:
            raise ReconciliationError(
                f"{index} does not match the source; alias {self.alias} left on "
                f"{self.backend.alias_targets(self.alias) or 'nothing'}: "
                f"{reconciliation.describe()}"
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
        with self._session(index):
            for batch in changed_documents(
                self.shop, report.low, report.high, self.settings.batch_size
            ):
                self._write(report, index, batch)
        self.backend.refresh(index)
        self._converge(index, report, self.tombstones())
        self._save_state(index, report.high)
        return report

    def _converge(self, index: str, report: SyncReport, tombstones: list[str]) -> Reconciliation:
        """Compare the index with the source's (id, version) set and repair what differs, then
        record the reconciliation in `report`.

        Products the index lacks or holds at another version are read again by id and written;
        documents of products gone from the source (hard deletes) are deleted. A change that
        no time window shows (a deleted stock row lowers a product's version) is repaired this
        way, and so is a write that committed while a full load was reading. Writes keep
        coming, so this runs up to `CONVERGE_ROUNDS` times, each against a fresh read of the
        source; the last comparison is the reconciliation."""
        for attempt in range(CONVERGE_ROUNDS + 1):
            source = self._source_versions().without(tombstones)
            indexed = self._index_versions(index)
            fix = sorted({*source.missing_from(indexed), *source.stale_in(indexed)}, key=int)
            gone = indexed.missing_from(source)
            if (not fix and not gone) or attempt == CONVERGE_ROUNDS:
                break
            if fix:
                self.log.info(
                    f"{index}: rewriting {len(fix)} documents that differ from the source"
                )
                before = report.upserted
                for batch in documents_by_id(self.shop, [int(i) for i in fix]):
                    self._write(report, index, batch)
                report.repaired += report.upserted - before
            if gone:
                outcome = self._delete(index, gone)
                if outcome.errors:
                    raise BulkFailure(outcome.errors)
                report.hard_deleted += len(gone)
            self.backend.refresh(index)
            if not fix:
                # the engine confirmed each delete: the scan minus them is the index now (no
                # second scan of the whole index for a run that only removed documents)
                indexed = indexed.without(gone)
                break
        report.source_versions = source
        report.index_versions = indexed
        report.reconciliation = reconcile(source, indexed)
        return report.reconciliation

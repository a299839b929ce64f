"""`search_products`: the daily sync of product documents into `catalog-products-{YYYY-MM}`
behind the `catalog-products` alias (see `search_sync/sync.py`)."""

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from lifecycle_pipelines.checks.gx import CHECK_NAMES
from lifecycle_pipelines.checks.results import check_result
from lifecycle_pipelines.control import ensure_control_schema
from lifecycle_pipelines.errors import retry_transient
from lifecycle_pipelines.resources import PostgresResource, SearchResource
from lifecycle_pipelines.search_sync.index_config import load_synonyms
from lifecycle_pipelines.search_sync.quality import check_sync
from lifecycle_pipelines.search_sync.sync import ProductSync, SyncBusy, SyncReport, SyncSettings

SEARCH_PARTITIONS = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_offset=1)
KEY = dg.AssetKey("search_products")
DESCRIPTIONS = {
    "schema": "The documents written have exactly the mapped fields.",
    "completeness": "Required fields are present, prices are not negative, ids are unique.",
    "reconciliation": "The index holds exactly the live source products: count and id+version checksum.",
}


class SearchSyncConfig(dg.Config):
    """Run configuration of the product sync."""

    safety_lag_seconds: int = 30
    overlap_minutes: int = 15
    batch_size: int = 2_000


def _day(partition_key: str) -> date:
    day = date.fromisoformat(partition_key)
    if day > datetime.now(UTC).date():
        raise dg.Failure(f"partition_key: {partition_key} is in the future; nothing was synced")
    return day


def _metadata(report: SyncReport) -> dict[str, dg.MetadataValue]:
    rec = report.reconciliation
    lines = [
        f"**{report.alias}** -> `{report.index}`"
        + (" (new month: built, reconciled, alias swapped)" if report.rotated else ""),
        "",
        "| upserted | soft deleted | hard deleted | tombstones replayed | retries |",
        "|---:|---:|---:|---:|---:|",
        f"| {report.upserted:,} | {report.soft_deleted:,} | {report.hard_deleted:,} "
        f"| {report.tombstones_replayed:,} | {report.retries:,} |",
    ]
    if rec is not None:
        lines += ["", f"source {rec.source_count:,} documents, index {rec.index_count:,}"]
    return {
        "index": dg.MetadataValue.text(report.index),
        "alias": dg.MetadataValue.text(report.alias),
        "rotated": dg.MetadataValue.bool(report.rotated),
        "documents_upserted": dg.MetadataValue.int(report.upserted),
        "documents_soft_deleted": dg.MetadataValue.int(report.soft_deleted),
        "documents_hard_deleted": dg.MetadataValue.int(report.hard_deleted),
        "documents_repaired": dg.MetadataValue.int(report.repaired),
        "documents_in_index": dg.MetadataValue.int(rec.index_count if rec else 0),
        "bulk_retries": dg.MetadataValue.int(report.retries),
        "high_water_mark": dg.MetadataValue.text(report.high.isoformat() if report.high else "-"),
        "duration_seconds": dg.MetadataValue.float(round(report.seconds, 3)),
        "summary": dg.MetadataValue.md("\n".join(lines)),
    }


@dg.asset(
    key=KEY,
    group_name="search_sync",
    partitions_def=SEARCH_PARTITIONS,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
    kinds={"postgres", "opensearch"},
    owners=["team:data-platform"],
    description=(
        "Products (with brand, category, price and stock) in `catalog-products-{YYYY-MM}` behind "
        "the `catalog-products` alias: commit-safe increments, soft and hard deletes, and a "
        "reconciled, atomic alias swap on the first run of each month."
    ),
    check_specs=[
        dg.AssetCheckSpec(name, asset=KEY, blocking=True, description=DESCRIPTIONS[name])
        for name in CHECK_NAMES
    ],
)
def search_products(
    context: dg.AssetExecutionContext,
    config: SearchSyncConfig,
    shop_db: PostgresResource,
    control_db: PostgresResource,
    search: SearchResource,
) -> Iterator[dg.MaterializeResult]:
    day = _day(context.partition_key)
    rules = load_synonyms()  # a malformed file fails here, before any index is touched
    settings = SyncSettings(
        safety_lag=timedelta(seconds=config.safety_lag_seconds),
        overlap=timedelta(minutes=config.overlap_minutes),
        batch_size=config.batch_size,
    )
    with (
        retry_transient(),
        shop_db.connect(autocommit=True) as shop,
        control_db.connect(autocommit=True) as control,
    ):
        ensure_control_schema(control)
        sync = ProductSync(search.get_backend(), shop, control, rules, settings, context.log)
        try:
            report = sync.run(day)
        except SyncBusy as err:  # an overlapping run of the same alias: try again later
            context.log.warning(f"{err}; retrying in 5 minutes")
            raise dg.RetryRequested(max_retries=6, seconds_to_wait=300) from err
    outcomes = check_sync(report)
    yield dg.MaterializeResult(
        metadata=_metadata(report),
        check_results=[
            check_result(KEY, name, outcomes.get(name), "no documents written in this run")
            for name in CHECK_NAMES
        ],
    )

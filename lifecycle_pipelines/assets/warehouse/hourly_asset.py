"""`warehouse_hourly`: the rows changed in one hour, staged as Parquet and merged into the star
schema (fact_orders, fact_order_items, dim_products, dim_users, dim_date)."""

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Literal

import dagster as dg
from pydantic import Field

from lifecycle_pipelines.checks.results import check_result
from lifecycle_pipelines.errors import retry_transient
from lifecycle_pipelines.resources import PostgresResource, S3Resource, WarehouseResource
from lifecycle_pipelines.warehouse.loader import HourLoader
from lifecycle_pipelines.warehouse.outcome import HourLoad, HourNotClosed, ReconciliationFailed
from lifecycle_pipelines.warehouse.quality import check_hour

WAREHOUSE_PARTITIONS = dg.HourlyPartitionsDefinition(start_date="2026-11-01-00:00")
KEY = dg.AssetKey("warehouse_hourly")
CHECK = "reconciliation"


class WarehouseLoadConfig(dg.Config):
    """Run configuration of an hourly load."""

    on_new_column: Literal["fail", "ignore"] = Field(
        default="fail",
        description="A source column the model does not know: fail the run, or load without it.",
    )
    safety_lag_seconds: int = Field(
        default=30,
        ge=0,
        description="Changes younger than this are not final yet (commit-safe high-water mark).",
    )
    not_closed_retries: int = Field(
        default=6,
        ge=0,
        description=(
            "Retries when a transaction that may still write rows of the hour is open (a long "
            "transaction on the shop delays the hour; it is never loaded half-way)."
        ),
    )
    not_closed_wait_seconds: float = Field(
        default=300.0, ge=0, description="Seconds between those retries."
    )


def _hour(partition_key: str) -> datetime:
    """The hour of a partition key such as `2026-11-20-10:00`; anything else is refused (a key
    off the hour would load a window that straddles two partitions)."""
    try:
        hour = datetime.strptime(partition_key, "%Y-%m-%d-%H:%M").replace(tzinfo=UTC)
    except ValueError:
        raise dg.Failure(
            f"partition_key: {partition_key!r} is not an hour like 2026-11-20-10:00; "
            "nothing was loaded"
        ) from None
    if hour.minute or hour < WAREHOUSE_PARTITIONS.start:
        raise dg.Failure(
            f"partition_key: {partition_key!r} is not a partition of warehouse_hourly (hours "
            "from 2026-11-01-00:00, on the hour); nothing was loaded"
        )
    if hour + timedelta(hours=1) > datetime.now(UTC):
        raise dg.Failure(f"partition_key: {partition_key} has not ended yet; nothing was loaded")
    return hour


def _metadata(load: HourLoad) -> dict[str, dg.MetadataValue]:
    lines = ["| table | rows | loaded | staged object |", "|---|---:|---|---|"]
    lines += [f"| {t.table.name} | {t.rows:,} | {t.path} | `{t.uri}` |" for t in load.tables]
    ignored = {t.table.source_table: t.new_columns for t in load.tables if t.new_columns}
    metadata: dict[str, dg.MetadataValue] = {
        "rows": dg.MetadataValue.int(sum(t.rows for t in load.tables)),
        **{f"rows_{t.table.name}": dg.MetadataValue.int(t.rows) for t in load.tables},
        "staged_objects": dg.MetadataValue.json([t.uri for t in load.tables]),
        "duration_seconds": dg.MetadataValue.float(round(load.seconds, 3)),
        "phases_seconds": dg.MetadataValue.json({k: round(v, 3) for k, v in load.phases.items()}),
        "summary": dg.MetadataValue.md("\n".join(lines)),
    }
    if ignored:
        metadata["new_source_columns_not_loaded"] = dg.MetadataValue.json(ignored)
    return metadata


@dg.asset(
    key=KEY,
    group_name="warehouse",
    partitions_def=WAREHOUSE_PARTITIONS,
    backfill_policy=dg.BackfillPolicy.multi_run(max_partitions_per_run=1),
    kinds={"postgres", "s3", "redshift"},
    owners=["team:data-platform"],
    description=(
        "The shop rows changed in one hour, pseudonymised (HMAC user keys, no personal columns), "
        "staged as Parquet in the staging bucket and merged into the star schema in one "
        "transaction; re-running an hour changes nothing."
    ),
    check_specs=[
        dg.AssetCheckSpec(
            CHECK,
            asset=KEY,
            blocking=True,
            description="Fact rows of the hour: count, key checksum and money sums, source against warehouse.",
        )
    ],
)
def warehouse_hourly(
    context: dg.AssetExecutionContext,
    config: WarehouseLoadConfig,
    shop_db: PostgresResource,
    s3: S3Resource,
    warehouse: WarehouseResource,
) -> Iterator[dg.MaterializeResult]:
    hour = _hour(context.partition_key)
    with retry_transient(), shop_db.connect(autocommit=True) as shop:
        connection = warehouse.connect()
        try:
            load = HourLoader(
                shop=shop,
                warehouse=connection,
                engine=warehouse.backend,
                schema=warehouse.schema_name,
                s3=s3,
                pseudonym_key=warehouse.pseudonym_key(),
                copy_iam_role_arn=warehouse.copy_iam_role_arn,
                on_new_column=config.on_new_column,
                safety_lag=timedelta(seconds=config.safety_lag_seconds),
                reconcile=check_hour,
                logger=context.log,
            ).run(hour)
        except HourNotClosed as err:
            context.log.warning(f"{err}; retrying in {config.not_closed_wait_seconds:.0f} s")
            raise dg.RetryRequested(
                max_retries=config.not_closed_retries,
                seconds_to_wait=config.not_closed_wait_seconds,
            ) from err
        except ReconciliationFailed as err:
            raise dg.Failure(
                description=str(err),
                metadata={"failed_expectations": dg.MetadataValue.md(err.outcome.markdown())},
            ) from err
        finally:
            connection.close()
    assert load.reconciliation is not None  # checked before the commit (reconcile=check_hour)
    yield dg.MaterializeResult(
        metadata=_metadata(load),
        check_results=[check_result(KEY, CHECK, load.reconciliation, "no rows in this hour")],
    )

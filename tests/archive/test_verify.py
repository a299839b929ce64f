"""Verification of archived objects (pure: a local Parquet file, the real suites, no stack).

The object's figures are computed from the written file and checked by its Great Expectations
suite against the source figures; every kind of wrong file must fail the right check."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lifecycle_pipelines.archive.columns import SourceColumn, TableShape
from lifecycle_pipelines.archive.crypto import PERSONAL_COLUMN
from lifecycle_pipelines.archive.plan import ArchiveMonth
from lifecycle_pipelines.archive.stats import ReconStats, table_stats
from lifecycle_pipelines.archive.verify import (
    exact_sum,
    file_figures,
    money_cents,
    rows_frame,
    validate_object,
)
from lifecycle_pipelines.checks.gx import load_suite, schema_frame, validate

MONTH = ArchiveMonth("orders", date(2024, 2, 1))
MONEY = ["subtotal", "shipping_fee", "tax", "total"]
SUITE = "archive_orders.orders"

SHAPE = TableShape(
    schema="public",
    table="orders",
    columns=(
        SourceColumn("order_id", "bigint", True),
        SourceColumn("user_id", "bigint", False),
        SourceColumn("status", "character varying(20)", True),
        SourceColumn("currency", "character(3)", True),
        *(SourceColumn(m, "numeric(12,2)", True) for m in MONEY),
        SourceColumn("shipping_name", "character varying(200)", False),
        SourceColumn("shipping_country", "character(2)", False),
        SourceColumn("created_at", "timestamp with time zone", True),
        SourceColumn("updated_at", "timestamp with time zone", True),
    ),
    primary_key="order_id",
    time_column="created_at",
    version_column="updated_at",
    subject_column="user_id",
    personal_columns=("shipping_name",),
    money_columns=tuple(MONEY),
)


def _orders(n: int = 1000, first_key: int = 1) -> pa.Table:
    """An archived orders object (personal columns already replaced by `_personal`)."""
    rng = np.random.default_rng(7)
    keys = np.arange(first_key, first_key + n, dtype=np.int64)
    start = MONTH.start
    moments = [start + timedelta(minutes=int(m)) for m in rng.integers(0, 28 * 24 * 60, n)]
    money = {
        m: pa.array(
            [Decimal(int(c)).scaleb(-2) for c in rng.integers(0, 10**7, n)], pa.decimal128(12, 2)
        )
        for m in MONEY
    }
    return pa.table(
        {
            "order_id": keys,
            "user_id": pa.array(rng.integers(1, 50, n), pa.int64()),
            "status": pa.array(["delivered"] * n, pa.string()),
            "currency": pa.array(["EUR"] * n, pa.string()),
            **money,
            "shipping_country": pa.array(["IE"] * n, pa.string()),
            "created_at": pa.array(moments, pa.timestamp("us", tz="UTC")),
            "updated_at": pa.array(moments, pa.timestamp("us", tz="UTC")),
            PERSONAL_COLUMN: pa.array([b"\x00" * 40] * n, pa.binary()),
        }
    )


def _write(table: pa.Table, path: Path) -> Path:
    pq.write_table(table, path, row_group_size=300, compression="zstd")
    return path


def _outcomes(table: pa.Table, tmp_path: Path, source: ReconStats | None = None) -> dict:
    path = _write(table, tmp_path / "part.parquet")
    figures = file_figures(path, SHAPE)
    truth = source or table_stats(_orders(), "order_id", MONEY)
    return validate_object(
        pq.read_schema(path), figures, suite_name=SUITE, source=truth, month=MONTH
    )


def _passed(outcomes: dict) -> dict[str, bool]:
    return {name: outcome.success for name, outcome in outcomes.items()}


def test_a_faithful_object_passes_every_check(tmp_path: Path) -> None:
    outcomes = _outcomes(_orders(), tmp_path)
    assert _passed(outcomes) == {"schema": True, "completeness": True, "reconciliation": True}
    assert outcomes["reconciliation"].evaluated >= 9


def test_figures_from_the_file_equal_the_figures_of_the_table(tmp_path: Path) -> None:
    table = _orders()
    figures = file_figures(_write(table, tmp_path / "p.parquet"), SHAPE)
    stats = table_stats(table, "order_id", MONEY)
    assert (figures.rows, figures.pk_sum, figures.pk_hash_sum) == (
        stats.rows,
        stats.pk_sum,
        stats.pk_hash_sum,
    )
    assert figures.cents == stats.money_cents
    assert figures.pk_duplicates == 0 and set(figures.nulls.values()) == {0}
    assert rows_frame(table, SHAPE).to_dict("records") == figures.frame().to_dict("records")


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("a missing row", lambda t: t.slice(1)),
        ("a duplicated row", lambda t: pa.concat_tables([t, t.slice(500, 1)])),
        (
            "a changed key",
            lambda t: t.set_column(
                0, "order_id", pa.array(np.r_[[999_999], t["order_id"].to_numpy()[1:]])
            ),
        ),
        (
            "one cent more",
            lambda t: t.set_column(
                t.schema.get_field_index("total"),
                "total",
                pa.array(
                    [t["total"][0].as_py() + Decimal("0.01"), *t["total"].to_pylist()[1:]],
                    pa.decimal128(12, 2),
                ),
            ),
        ),
        (
            "a row from the next month",
            lambda t: t.set_column(
                t.schema.get_field_index("created_at"),
                "created_at",
                pa.array(
                    [MONTH.end, *t["created_at"].to_pylist()[1:]], pa.timestamp("us", tz="UTC")
                ),
            ),
        ),
    ],
)
def test_a_wrong_object_fails_reconciliation(tmp_path: Path, name: str, damage) -> None:
    outcomes = _outcomes(damage(_orders()), tmp_path)
    assert not outcomes["reconciliation"].success, name
    assert outcomes["schema"].success


def test_keys_out_of_order_are_still_checked_for_duplicates(tmp_path: Path) -> None:
    table = _orders()
    shuffled = table.take(np.random.default_rng(1).permutation(table.num_rows))
    assert _passed(_outcomes(shuffled, tmp_path))["reconciliation"]
    swapped_duplicate = pa.concat_tables([shuffled.slice(1), shuffled.slice(5, 1)])
    # Same row count as the source, but one key twice and one missing.
    outcomes = _outcomes(swapped_duplicate, tmp_path)
    assert not outcomes["reconciliation"].success
    figures = file_figures(tmp_path / "part.parquet", SHAPE)
    assert figures.pk_duplicates == 1


def test_a_null_in_a_required_column_fails_completeness(tmp_path: Path) -> None:
    table = _orders()
    status = pa.array([None, *table["status"].to_pylist()[1:]], pa.string())
    outcomes = _outcomes(table.set_column(2, "status", status), tmp_path)
    assert not outcomes["completeness"].success
    assert any("nulls_status" in line for line in outcomes["completeness"].failures)


def test_an_empty_object_fails_completeness(tmp_path: Path) -> None:
    outcomes = _outcomes(_orders().slice(0, 0), tmp_path)
    assert not outcomes["completeness"].success


def test_a_different_schema_fails_the_schema_check(tmp_path: Path) -> None:
    table = _orders()
    widened = table.set_column(
        table.schema.get_field_index("total"), "total", table["total"].cast(pa.float64())
    )
    outcomes = _outcomes(widened, tmp_path)
    assert not outcomes["schema"].success


def test_a_missing_required_column_fails(tmp_path: Path) -> None:
    outcomes = _outcomes(_orders().drop_columns(["currency"]), tmp_path)
    assert not outcomes["schema"].success and not outcomes["completeness"].success


def test_a_file_without_null_statistics_is_counted_from_its_values(tmp_path: Path) -> None:
    table = _orders()
    status = pa.array([None, *table["status"].to_pylist()[1:]], pa.string())
    path = tmp_path / "nostats.parquet"
    pq.write_table(table.set_column(2, "status", status), path, write_statistics=False)
    figures = file_figures(path, SHAPE)
    assert figures.nulls["status"] == 1 and figures.nulls["currency"] == 0


def test_the_restore_test_path_uses_the_same_figures(tmp_path: Path) -> None:
    table = _orders()
    truth = table_stats(table, "order_id", MONEY)
    from lifecycle_pipelines.archive.verify import gx_parameters

    outcomes = validate(
        load_suite(SUITE),
        {"schema": schema_frame(table.schema), "rows": rows_frame(table, SHAPE)},
        gx_parameters(truth, MONTH),
    )
    assert _passed(outcomes) == {"schema": True, "completeness": True, "reconciliation": True}
    wrong = ReconStats(truth.rows, truth.pk_sum + 1, truth.pk_hash_sum, truth.money_cents)
    outcomes = validate(
        load_suite(SUITE),
        {"schema": schema_frame(table.schema), "rows": rows_frame(table, SHAPE)},
        gx_parameters(wrong, MONTH),
    )
    assert not outcomes["reconciliation"].success


def test_exact_sums_do_not_wrap_around() -> None:
    big = np.array([2**62, 2**62, 2**62, -5], dtype=np.int64)
    assert exact_sum(big) == 3 * 2**62 - 5
    assert exact_sum(np.array([], dtype=np.int64)) == 0
    money = pa.array([Decimal("1.25"), None, Decimal("-0.05")], pa.decimal128(12, 2))
    assert money_cents(money) == 120
    wide = pa.array([Decimal("12.5")], pa.decimal128(10, 1))
    assert money_cents(wide) == 1250
    assert datetime(2024, 2, 1, tzinfo=UTC) == MONTH.start

"""Partition keys, eligibility, object keys and retention dates (pure logic)."""

from __future__ import annotations

from datetime import date

import pytest

from lifecycle_pipelines.archive.expiry import expires_on
from lifecycle_pipelines.archive.plan import (
    ArchiveMonth,
    PartitionError,
    check_eligible,
    newest_eligible_month,
    object_key,
)
from lifecycle_pipelines.policy import load_policy

POLICY = load_policy()
TODAY = date(2026, 11, 25)


@pytest.mark.parametrize("key", ["2025-13-01", "2025-01", "garbage", "2025-01-15"])
def test_malformed_partition_keys_name_the_field(key: str) -> None:
    with pytest.raises(PartitionError, match="partition_key"):
        ArchiveMonth.parse("orders", key)


def test_month_bounds_cover_exactly_one_month() -> None:
    month = ArchiveMonth.parse("orders", "2024-12-01")
    assert (month.start.isoformat(), month.end.isoformat()) == (
        "2024-12-01T00:00:00+00:00",
        "2025-01-01T00:00:00+00:00",
    )


def test_months_inside_the_active_window_are_refused() -> None:
    orders = POLICY.get("orders")
    check_eligible(ArchiveMonth.parse("orders", "2025-11-01"), orders, TODAY)
    with pytest.raises(PartitionError, match="inside the active window"):
        check_eligible(ArchiveMonth.parse("orders", "2025-12-01"), orders, TODAY)
    assert newest_eligible_month(orders, TODAY) == date(2025, 11, 1)
    assert newest_eligible_month(POLICY.get("user_activity"), TODAY) == date(2026, 5, 1)


def test_object_keys_are_deterministic_and_hive_partitioned() -> None:
    orders = POLICY.get("orders")
    key = object_key(orders, "order_items", date(2024, 3, 1), 2)
    assert key == "orders/order_items/year=2024/month=03/order_items-part-00002.parquet"


def test_retention_expiry_dates() -> None:
    assert expires_on(POLICY.get("user_activity"), date(2024, 1, 1)) == date(2026, 2, 1)
    assert expires_on(POLICY.get("orders"), date(2024, 1, 1)) == date(2031, 2, 1)

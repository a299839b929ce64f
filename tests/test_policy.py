"""The retention policy: the shipped file loads; invalid policies name the field."""

from __future__ import annotations

import copy
from datetime import date
from pathlib import Path

import pytest
import yaml

from lifecycle_pipelines.cli import main
from lifecycle_pipelines.policy import (
    DEFAULT_POLICY_PATH,
    Duration,
    PolicyError,
    load_policy,
    parse_policy,
)

DOCUMENT = yaml.safe_load(DEFAULT_POLICY_PATH.read_text())


def _broken(path: list[str], value: object) -> dict[str, object]:
    document = copy.deepcopy(DOCUMENT)
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return document


def test_shipped_policy_loads() -> None:
    policy = load_policy()
    assert set(policy.archived_types()) == {"orders", "user_activity"}
    orders = policy.get("orders")
    assert orders.archive_storage_class == "GLACIER"
    assert orders.retention_period == Duration(7, "y")
    assert orders.children[0].table == "order_items"
    assert policy.get("products").retention_period.indefinite


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (
            ["data_types", "orders", "archive_storage_class"],
            "COLD",
            "data_types.orders.archive_storage_class",
        ),
        (["data_types", "orders", "retention"], "seven years", "data_types.orders.retention"),
        (["data_types", "orders", "active_window"], "10d", "active_window"),
        (["data_types", "orders", "table"], "orders; DROP TABLE x", "data_types.orders.table"),
        (["data_types", "orders", "primary_key"], [], "data_types.orders.primary_key"),
        (["data_types", "orders", "personal_columns"], ["total"], "personal_columns"),
        (["data_types", "user_activity", "retention"], "1mo", "retention"),
        (["data_types", "orders", "surprise"], 1, "data_types.orders.surprise"),
        (["erasure", "grace_period"], "indefinite", "erasure.grace_period"),
        (["version"], 2, "version"),
    ],
)
def test_invalid_policy_names_the_field(path: list[str], value: object, field: str) -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy(_broken(path, value), "retention.yaml")
    assert f"retention.yaml: {field}" in str(raised.value) or field in str(raised.value)
    assert str(raised.value).startswith("retention.yaml: ")


def test_unknown_data_type_names_it() -> None:
    with pytest.raises(PolicyError, match=r"data_types\.invoices"):
        load_policy().get("invoices")


def test_oldest_active_month() -> None:
    orders = load_policy().get("orders")
    assert orders.oldest_active_month(date(2026, 11, 25)) == date(2025, 12, 1)
    assert orders.oldest_active_month(date(2026, 1, 1)) == date(2025, 2, 1)


def test_cli_policy_check_reports_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "retention.yaml"
    bad.write_text(yaml.safe_dump(_broken(["data_types", "orders", "retention"], "forever")))
    assert main(["policy", "check", str(bad)]) == 2
    assert "data_types.orders.retention" in capsys.readouterr().err
    assert main(["policy", "check"]) == 0

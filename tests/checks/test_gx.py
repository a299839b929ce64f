"""The Great Expectations adapter: suite files, checks grouped by name, no sample values."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from lifecycle_pipelines.checks.gx import SUITES_DIR, load_suite, validate


def _suite(expectations: list[dict]) -> dict:
    return {"name": "t", "expectations": expectations}


def test_every_shipped_suite_loads() -> None:
    names = sorted(p.stem for p in SUITES_DIR.glob("*.json"))
    assert names
    for name in names:
        assert load_suite(name)["expectations"]


def test_an_expectation_without_a_check_name_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text(
        json.dumps(_suite([{"type": "expect_table_row_count_to_equal", "kwargs": {"value": 1}}]))
    )
    with pytest.raises(ValueError, match=r"expectations\[0\]\.meta\.check"):
        load_suite("bad", tmp_path)


def test_failures_are_grouped_by_check_and_carry_no_sample_values() -> None:
    suite = _suite(
        [
            {
                "type": "expect_column_values_to_not_be_null",
                "kwargs": {"column": "email"},
                "meta": {"check": "completeness"},
            },
            {
                "type": "expect_table_row_count_to_equal",
                "kwargs": {"value": {"$PARAMETER": "source_rows"}},
                "meta": {"check": "reconciliation"},
            },
        ]
    )
    frame = pd.DataFrame({"email": ["secret@example.com", None]})
    outcomes = validate(suite, {"rows": frame}, {"source_rows": 3})
    assert set(outcomes) == {"completeness", "reconciliation"}
    assert not outcomes["completeness"].success
    assert not outcomes["reconciliation"].success
    text = json.dumps([o.failures for o in outcomes.values()]) + str(
        [o.observed for o in outcomes.values()]
    )
    assert "secret@example.com" not in text
    assert "observed {'observed_value': 2}" in outcomes["reconciliation"].failures[0]


def test_passing_suite() -> None:
    suite = _suite(
        [
            {
                "type": "expect_column_sum_to_be_between",
                "kwargs": {
                    "column": "cents",
                    "min_value": {"$PARAMETER": "s"},
                    "max_value": {"$PARAMETER": "s"},
                },
                "meta": {"check": "reconciliation"},
            }
        ]
    )
    outcomes = validate(suite, {"rows": pd.DataFrame({"cents": [1, 2, 3]})}, {"s": 6})
    assert outcomes["reconciliation"].success
    assert outcomes["reconciliation"].evaluated == 1

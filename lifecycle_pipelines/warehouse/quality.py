"""Reconciliation of an hourly load with Great Expectations: the warehouse rows of the loaded
keys against the source's figures for the rows changed in the hour."""

from __future__ import annotations

from lifecycle_pipelines.archive.stats import pk_hash
from lifecycle_pipelines.checks.gx import CheckOutcome, load_suite, validate
from lifecycle_pipelines.warehouse.loader import HourLoad


def check_hour(load: HourLoad) -> CheckOutcome:
    """One reconciliation outcome over the fact tables of the hour."""
    total = CheckOutcome("reconciliation")
    for item in load.tables:
        if not item.table.reconciled or (item.rows == 0 and item.source.rows == 0):
            continue
        frame = load.frames[item.table.name].copy()
        frame["_pk_hash"] = pk_hash(frame[item.table.key].to_numpy(dtype="int64"))
        outcomes = validate(
            load_suite(f"warehouse_{item.table.name}"), {"rows": frame}, item.source.as_parameters()
        )
        total.merge(outcomes["reconciliation"])
    return total

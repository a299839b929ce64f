"""Reconciliation of an hourly load with Great Expectations: the warehouse's figures of the loaded
keys (computed by the warehouse inside the load's transaction) against the source's figures of
the rows changed in the hour (computed in the source's snapshot)."""

from __future__ import annotations

from lifecycle_pipelines.checks.gx import CheckOutcome, figures_frame, load_suite, validate
from lifecycle_pipelines.warehouse.outcome import HourLoad


def check_hour(load: HourLoad) -> CheckOutcome:
    """One reconciliation outcome over every table of the hour (GX suite
    `warehouse_<table>`)."""
    total = CheckOutcome("reconciliation")
    for item in load.tables:
        if item.rows == 0 and item.source.rows == 0:
            continue
        figures = figures_frame(dict(load.figures[item.table.name].figures()))
        outcomes = validate(
            load_suite(f"warehouse_{item.table.name}"),
            {"rows": figures},
            item.source.as_parameters(),
        )
        total.merge(outcomes["reconciliation"])
    return total

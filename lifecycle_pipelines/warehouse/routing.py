"""PostgreSQL: which way each table's hour goes into the warehouse.

Rows with a key above the target's greatest key (the bound) cannot be in the target: they are
COPYed straight into it as they stream, no stage and no MERGE. When that is every row of the
hour (a first load, a backfill into an empty range) nothing else is done ("direct"); when it is
at least half (an hour of new orders and changes to older ones) the others are spooled and
MERGEd from a stage after the stream ("split"); otherwise every row is staged ("staged"). Tables
whose key is derived (the user key) are always staged.

Direct and split tables need the targets' locks before the stream: they are taken here (one
statement, `lock_order`, the order every load uses) and each bound is read again under them.
Counting the hour's rows above a bound is a pass over them in the source snapshot; the same pass
computes the table's source figures, kept in `figures` so that the hour is not read again for
them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from lifecycle_pipelines.archive.stats import ReconStats
from lifecycle_pipelines.warehouse.plan import TablePlan
from lifecycle_pipelines.warehouse.source import HourSource
from lifecycle_pipelines.warehouse.target import Bound, WarehouseTarget


def lock_order(plans: list[TablePlan]) -> list[str]:
    """The tables a load locks, in the one order every load takes them (no deadlock)."""
    return [plan.table.name for plan in plans] + ["dim_date"]


class Routing:
    """The routes of one load's tables over `[hour, end)`, read in the source's snapshot."""

    def __init__(
        self, source: HourSource, target: WarehouseTarget, hour: datetime, end: datetime
    ) -> None:
        self.source = source
        self.target = target
        self.hour = hour
        self.end = end
        self.figures: dict[str, ReconStats] = {}  # source figures read by the routing pass
        self._routes: dict[tuple[str, Any], bool | None] = {}  # one pass per table and bound

    def direct_tables(self, cur: Any, plans: list[TablePlan]) -> dict[str, tuple[Bound, bool]]:
        """The tables whose new rows go straight into the target as they stream, with their
        bound and whether the rest is split off to a stage; the targets are locked (on `cur`,
        the load's transaction) when there is any."""
        candidates: set[str] = set()
        for plan in plans:
            table = plan.table
            if table.key not in table.taken:
                continue
            bound = self.target.greatest_key(cur, table)
            if bound.target_was_empty or self._route(plan, bound) is not None:
                candidates.add(table.name)
        if not candidates:
            return {}
        self.target.lock(cur, lock_order(plans))
        direct: dict[str, tuple[Bound, bool]] = {}
        for plan in plans:
            if plan.table.name not in candidates:
                continue
            bound = self.target.greatest_key(cur, plan.table)
            split = False if bound.target_was_empty else self._route(plan, bound)
            if split is not None:
                direct[plan.table.name] = (bound, split)
        return direct

    def _route(self, plan: TablePlan, bound: Bound) -> bool | None:
        """For a non-empty target: False when every row of the hour is above `bound`, True when
        at least half are (split), None when fewer are (staged)."""
        memo = (plan.table.name, bound.key)
        if memo not in self._routes:
            stats, above = self.source.figures_and_profile(
                plan.table, self.hour, self.end, bound.key
            )
            self.figures[plan.table.name] = stats
            rows = stats.rows
            self._routes[memo] = False if above == rows else (True if 2 * above >= rows else None)
        return self._routes[memo]

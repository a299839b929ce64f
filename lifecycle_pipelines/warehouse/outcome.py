"""What an hourly load reports: the tables it loaded with their figures, and the two ways it
refuses to load (an hour still open, figures that disagree)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from lifecycle_pipelines.archive.stats import ReconStats
from lifecycle_pipelines.checks.gx import CheckOutcome
from lifecycle_pipelines.warehouse.model import WarehouseTable


class HourNotClosed(RuntimeError):
    """A transaction that may still write rows of this hour is open; nothing was loaded."""


class ReconciliationFailed(RuntimeError):
    """The warehouse's figures of the hour disagree with the source's; the load was rolled
    back. `outcome` names the figures that disagree."""

    def __init__(self, hour: datetime, outcome: CheckOutcome) -> None:
        self.outcome = outcome
        figures = "; ".join(outcome.failures) or "no detail"
        super().__init__(
            f"hour {hour:%Y-%m-%d %H}:00: the warehouse's figures disagree with the source's "
            f"({figures}); the load was rolled back, nothing changed"
        )


@dataclass
class TableLoad:
    """What one table received."""

    table: WarehouseTable
    rows: int
    uri: str
    source: ReconStats
    new_columns: list[str] = field(default_factory=list)
    excluded: int = 0  # rows of soft-deleted users: not loaded (dim_users) or without user key
    path: str = "staged"  # "direct": COPYed into the target (every key new); "split": new keys
    # COPYed into the target, the others staged and MERGEd; "staged": staged, INSERTed or MERGEd


@dataclass
class HourLoad:
    """What one hourly run did."""

    hour: datetime
    tables: list[TableLoad] = field(default_factory=list)
    figures: dict[str, ReconStats] = field(default_factory=dict)  # the warehouse's, per table
    reconciliation: CheckOutcome | None = None  # checked before commit, when a check was given
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step, for profiling

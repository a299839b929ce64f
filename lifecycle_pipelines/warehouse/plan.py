"""One table of an hourly load: what is loaded (`TablePlan`) and what its hour brought
(`TableHour`: route, counts, keys to delete, dates, the source's figures)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa

from lifecycle_pipelines.archive.columns import SourceColumn, TableShape
from lifecycle_pipelines.archive.stats import ReconStats
from lifecycle_pipelines.warehouse.model import USER_KEY, WarehouseTable
from lifecycle_pipelines.warehouse.sql import Relation
from lifecycle_pipelines.warehouse.target import Bound


@dataclass
class TablePlan:
    """One table to load: its model, source columns, warehouse columns, tolerated new columns."""

    table: WarehouseTable
    source: list[SourceColumn]
    columns: list[tuple[str, str]]
    new: list[str]

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.columns]

    @property
    def key_type(self) -> str:
        """The warehouse type of the table's key."""
        return dict(self.columns)[self.table.key]

    def source_shape(self) -> TableShape:
        """The source columns to read: those the table takes, and `user_id` for a user key."""
        table = self.table
        wanted = list(table.taken)
        if USER_KEY in table.derived:
            wanted.append("user_id")
        by_name = {c.name: c for c in self.source}
        return TableShape(
            schema="public", table=table.source_table, columns=tuple(by_name[n] for n in wanted),
            primary_key=table.key if table.key in wanted else "user_id", time_column=None,
            version_column=None, subject_column=None, personal_columns=(),
            money_columns=table.money,
        )  # fmt: skip

    def batch_schema(self) -> pa.Schema:
        """The Arrow schema of the loaded batches (and of the staged Parquet)."""
        types = {c.name: c.arrow_type for c in self.source}
        types[USER_KEY.name] = pa.string()
        types["date_key"] = pa.int32()
        return pa.schema([pa.field(name, types[name]) for name in self.names])


@dataclass
class TableHour:
    """One table's hour: what was extracted and where it was staged."""

    plan: TablePlan
    stage: Relation  # `WarehouseTarget.stage_for`
    deleted: pa.Array | None  # soft-deleted users among the rows (tables with a user key)
    stats: ReconStats | None = None  # the source's figures (routing pass, or beside the stream)
    direct: Bound | None = None  # rows with a key above it are COPYed straight into the target
    split: bool = False  # with `direct`: the rows at or below the bound go through a stage
    changed: bool = True  # whether the source has rows of the hour (else none are read)
    rows: int = 0
    excluded: int = 0
    uri: str = ""
    # (key, when) of rows deleted in the source, and of users soft-deleted (dim_users)
    deletions: list[tuple[Any, datetime]] = field(default_factory=list)
    dates: set[int] = field(default_factory=set)

    @property
    def has_stage(self) -> bool:
        """Whether rows went through the stage (staged and split loads)."""
        return self.direct is None or self.split

    @property
    def path(self) -> str:
        if self.direct is None:
            return "staged"
        return "split" if self.split else "direct"

    @property
    def source(self) -> ReconStats:
        if self.stats is None:
            raise RuntimeError(f"{self.plan.table.name}: the source figures were not computed")
        return self.stats

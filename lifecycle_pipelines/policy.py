"""The retention policy (spec 8.1) as typed, validated configuration.

`load_policy()` reads `retention.yaml` beside this module (or another file) and fails at load with
a `PolicyError` whose message names the offending field, e.g.
`retention.yaml: data_types.orders.archive_storage_class: ...`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_POLICY_PATH = Path(__file__).with_name("retention.yaml")
IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
_DURATION = re.compile(r"^(?P<value>\d+)(?P<unit>h|d|mo|y)$")
STORAGE_CLASSES = ("STANDARD", "STANDARD_IA", "GLACIER_IR", "GLACIER", "DEEP_ARCHIVE")

Identifier = Annotated[str, Field(pattern=IDENTIFIER, max_length=63)]


class PolicyError(ValueError):
    """The retention policy is invalid; the message names the field."""


@dataclass(frozen=True)
class Duration:
    """A retention duration: a count of hours, days, months or years, or indefinite."""

    value: int | None
    unit: str

    @classmethod
    def parse(cls, text: str) -> Duration:
        """Parse `7y`, `30d`, `12mo`, `24h` or `indefinite`."""
        if text == "indefinite":
            return cls(None, "indefinite")
        match = _DURATION.match(text)
        if match is None or int(match["value"]) <= 0:
            raise ValueError(
                f"expected a positive duration like 30d, 12mo, 7y or 'indefinite', got {text!r}"
            )
        return cls(int(match["value"]), match["unit"])

    @property
    def indefinite(self) -> bool:
        return self.value is None

    def approx_days(self) -> float:
        """Length in days (months as 30.44 days); infinity when indefinite."""
        if self.value is None:
            return float("inf")
        factor = {"h": 1 / 24, "d": 1.0, "mo": 30.44, "y": 365.25}[self.unit]
        return self.value * factor

    def months(self) -> int:
        """Whole calendar months; only for durations given in months or years."""
        if self.unit == "mo" and self.value is not None:
            return self.value
        if self.unit == "y" and self.value is not None:
            return self.value * 12
        raise ValueError(f"{self} is not a whole number of months")

    def __str__(self) -> str:
        return "indefinite" if self.value is None else f"{self.value}{self.unit}"


class ChildTable(BaseModel):
    """A table whose rows follow their parent row (archived and purged with it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    table: Identifier
    schema_name: Identifier = Field(default="public", alias="schema")
    foreign_key: Identifier
    primary_key: list[Identifier] = Field(min_length=1)
    money_columns: list[Identifier] = Field(default_factory=list)
    personal_columns: list[Identifier] = Field(default_factory=list)


class DataTypePolicy(BaseModel):
    """Retention rules for one data type of spec 8.1."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    description: str = ""
    store: Literal["postgres", "dynamodb", "opensearch", "cloudwatch"]
    service: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]*$")]
    table: Identifier
    schema_name: Identifier = Field(default="public", alias="schema")
    time_column: Identifier
    primary_key: list[Identifier] = Field(min_length=1)
    subject_column: Identifier | None = None
    personal_columns: list[Identifier] = Field(default_factory=list)
    money_columns: list[Identifier] = Field(default_factory=list)
    active_window: str | None = None
    archive_storage_class: Literal[STORAGE_CLASSES] | None = None  # type: ignore[valid-type]
    retention: str
    children: list[ChildTable] = Field(default_factory=list)

    @field_validator("active_window", "retention")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            Duration.parse(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> DataTypePolicy:
        protected = set(self.primary_key) | {self.time_column} | set(self.money_columns)
        if self.subject_column:
            protected.add(self.subject_column)
        overlap = sorted(protected & set(self.personal_columns))
        if overlap:
            raise ValueError(
                f"personal_columns: {overlap} are keys, timestamps or money and stay in clear"
            )
        if self.personal_columns and not self.subject_column:
            raise ValueError("subject_column: required when personal_columns are listed")
        if self.active_window is not None:
            window = Duration.parse(self.active_window)
            if window.unit not in ("mo", "y"):
                raise ValueError("active_window: archival runs by month; give it in mo or y")
            if self.archive_storage_class is None:
                raise ValueError("archive_storage_class: required when active_window is set")
            if window.approx_days() > self.retention_period.approx_days():
                raise ValueError("retention: shorter than the active_window")
        return self

    @property
    def retention_period(self) -> Duration:
        return Duration.parse(self.retention)

    @property
    def active_period(self) -> Duration | None:
        return None if self.active_window is None else Duration.parse(self.active_window)

    @property
    def archived(self) -> bool:
        """True when rows age out of the source into the archive by month."""
        return self.store == "postgres" and self.active_window is not None

    def oldest_active_month(self, today: date) -> date:
        """The first day of the oldest month still inside the active window on `today`.

        Months before it are eligible for archival: with a 12-month window on 2026-11-25 the
        active months are 2025-12 .. 2026-11, so 2025-11 and older may be archived.
        """
        period = self.active_period
        if period is None:
            raise ValueError(f"{self.table} has no active_window and is never archived")
        months = today.year * 12 + (today.month - 1) - (period.months() - 1)
        return date(months // 12, months % 12 + 1, 1)


class ErasurePolicy(BaseModel):
    """Erasure settings (spec 8.3)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    grace_period: str = "30d"

    @field_validator("grace_period")
    @classmethod
    def _duration(cls, value: str) -> str:
        if Duration.parse(value).indefinite:
            raise ValueError("a grace period cannot be indefinite")
        return value


class RetentionPolicy(BaseModel):
    """The whole retention policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1]
    erasure: ErasurePolicy = Field(default_factory=ErasurePolicy)
    data_types: dict[Annotated[str, Field(pattern=IDENTIFIER)], DataTypePolicy] = Field(
        min_length=1
    )

    def archived_types(self) -> dict[str, DataTypePolicy]:
        """The data types archived from PostgreSQL by month, by name."""
        return {name: dt for name, dt in self.data_types.items() if dt.archived}

    def subject_search_indices(self) -> list[tuple[str, str]]:
        """(index pattern, subject field) of every search data type that holds data subjects:
        monthly indices `{service}-{table}-YYYY-MM`, matched as `{service}-{table}-*`."""
        return [
            (f"{dt.service}-{dt.table}-*", dt.subject_column)
            for dt in self.data_types.values()
            if dt.store == "opensearch" and dt.subject_column
        ]

    def get(self, name: str) -> DataTypePolicy:
        """The policy of data type `name`; PolicyError names it when unknown."""
        try:
            return self.data_types[name]
        except KeyError:
            raise PolicyError(
                f"data_types.{name}: not in the retention policy "
                f"(known: {', '.join(sorted(self.data_types))})"
            ) from None


def _describe(err: ValidationError, source: str) -> str:
    lines = []
    for problem in err.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {field}: {message}")
    return "\n".join(lines)


def parse_policy(document: object, source: str = "retention policy") -> RetentionPolicy:
    """Validate a parsed YAML/JSON document as a retention policy."""
    try:
        return RetentionPolicy.model_validate(document)
    except ValidationError as err:
        raise PolicyError(_describe(err, source)) from None


def load_policy(path: Path | None = None) -> RetentionPolicy:
    """Load and validate the retention policy file (default: retention.yaml in this package)."""
    path = path or DEFAULT_POLICY_PATH
    try:
        document = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise PolicyError(f"{path.name}: not valid YAML: {err}") from None
    return parse_policy(document, path.name)

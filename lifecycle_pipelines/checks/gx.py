"""A small Great Expectations 1.x adapter for Dagster asset checks.

A suite is a JSON file in `expectations/` in GX's own ExpectationSuite format. Each expectation's
`meta` says which Dagster check it belongs to (`"check": "schema" | "completeness" |
"reconciliation"`) and which batch it reads (`"batch": "rows"` by default, or `"schema"`, a
one-row-per-column frame with a `signature` column `name:arrow_type`). Suite parameters
(`{"$PARAMETER": "source_rows"}`) carry figures computed on the source side.

Results are summarised without sample values (GX's `partial_unexpected_list` could hold personal
data), so they are safe as asset-check metadata. dagster-ge requires GX < 1, hence this adapter.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

log = logging.getLogger(__name__)

SUITES_DIR = Path(__file__).resolve().parents[2] / "expectations"
CHECK_NAMES = ("schema", "completeness", "reconciliation")


@dataclass
class CheckOutcome:
    """The result of one check (a group of expectations) over one or more batches."""

    check: str
    success: bool = True
    evaluated: int = 0
    failures: list[str] = field(default_factory=list)
    observed: dict[str, Any] = field(default_factory=dict)

    def merge(self, other: CheckOutcome) -> None:
        self.success = self.success and other.success
        self.evaluated += other.evaluated
        self.failures.extend(other.failures)
        for key, value in other.observed.items():
            self.observed[key] = value

    def markdown(self) -> str:
        if self.success:
            return f"{self.evaluated} expectations passed"
        return "\n".join(f"- {line}" for line in self.failures)


def load_suite(name: str, folder: Path | None = None) -> dict[str, Any]:
    """The suite `name` (file `<name>.json`) as a dict; FileNotFoundError names the path."""
    path = (folder or SUITES_DIR) / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"expectation suite {name!r}: {path} does not exist")
    document = json.loads(path.read_text())
    if not isinstance(document, dict) or "expectations" not in document:
        raise ValueError(f"expectation suite {path}: expected an object with 'expectations'")
    for index, expectation in enumerate(document["expectations"]):
        check = expectation.get("meta", {}).get("check")
        if check not in CHECK_NAMES:
            raise ValueError(
                f"expectation suite {path}: expectations[{index}].meta.check: expected one of "
                f"{CHECK_NAMES}, got {check!r}"
            )
    return document


@cache
def _batch_definition() -> Any:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    asset = context.data_sources.add_pandas("lifecycle").add_dataframe_asset("batch")
    return asset.add_batch_definition_whole_dataframe("whole")


@cache
def _gx_suite(name: str, expectations_json: str) -> Any:
    """A GX suite object, built once per distinct content (construction is costly)."""
    from great_expectations.core.expectation_suite import ExpectationSuite

    return ExpectationSuite(name=name, expectations=json.loads(expectations_json))


def schema_frame(schema: pa.Schema) -> pd.DataFrame:
    """One row per column: `signature` = `name:arrow_type`, in file order."""
    return pd.DataFrame(
        {
            "position": range(len(schema)),
            "signature": [f"{f.name}:{f.type}" for f in schema],
        }
    )


def figures_frame(figures: dict[str, int | None]) -> pd.DataFrame:
    """A one-row batch of figures (one column each) for expectations on computed figures:
    int64 where the value fits (vectorised GX metrics), else the exact Python int."""
    return pd.DataFrame(
        {
            name: pd.Series(
                [value],
                dtype="int64" if value is not None and -(2**63) <= value < 2**63 else "object",
            )
            for name, value in figures.items()
        }
    )


def _summarise(result: Any) -> tuple[str, bool, dict[str, Any], str | None]:
    config = result.expectation_config
    column = config.kwargs.get("column")
    label = f"{config.type}({column})" if column else config.type
    observed: dict[str, Any] = {}
    details = result.result or {}
    for key in ("observed_value", "unexpected_count", "element_count"):
        if key in details and details[key] is not None:
            value = details[key]
            observed[key] = value.item() if hasattr(value, "item") else value
    failure = None
    if not result.success:
        if result.exception_info and result.exception_info.get("raised_exception"):
            failure = f"{label}: error {result.exception_info.get('exception_message')}"
        else:
            expected = {k: v for k, v in config.kwargs.items() if k not in ("column", "batch_id")}
            failure = f"{label}: observed {observed}, expected {expected}"
    return label, bool(result.success), observed, failure


def validate(
    suite: dict[str, Any],
    batches: dict[str, pd.DataFrame],
    parameters: dict[str, Any] | None = None,
) -> dict[str, CheckOutcome]:
    """Run every expectation of `suite` on its batch; one outcome per check name."""
    outcomes = {name: CheckOutcome(name) for name in CHECK_NAMES}
    by_batch: dict[str, list[dict[str, Any]]] = {}
    for expectation in suite["expectations"]:
        by_batch.setdefault(expectation.get("meta", {}).get("batch", "rows"), []).append(
            expectation
        )
    for batch_name, expectations in by_batch.items():
        if batch_name not in batches:
            raise KeyError(f"suite {suite.get('name')}: no batch {batch_name!r} was provided")
        gx_suite = _gx_suite(f"{suite.get('name')}:{batch_name}", json.dumps(expectations))
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": batches[batch_name]})
        result = batch.validate(gx_suite, expectation_parameters=parameters or {})
        for item in result.results:
            check = item.expectation_config.meta.get("check")
            label, success, observed, failure = _summarise(item)
            outcome = outcomes[check]
            outcome.evaluated += 1
            outcome.success = outcome.success and success
            if failure:
                outcome.failures.append(failure)
            if "observed_value" in observed:
                outcome.observed[label] = observed["observed_value"]
    return {name: o for name, o in outcomes.items() if o.evaluated}

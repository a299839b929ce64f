"""Check outcomes as Dagster asset-check results (metadata without sample values)."""

import dagster as dg

from lifecycle_pipelines.checks.gx import CheckOutcome


def check_result(
    asset_key: dg.AssetKey, name: str, outcome: CheckOutcome | None, when_absent: str
) -> dg.AssetCheckResult:
    """The asset-check result of one check; a passing note `when_absent` if it did not run
    (nothing to check in this run)."""
    if outcome is None:
        return dg.AssetCheckResult(
            asset_key=asset_key,
            check_name=name,
            passed=True,
            metadata={"note": dg.MetadataValue.text(when_absent)},
        )
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=name,
        passed=outcome.success,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "expectations_evaluated": dg.MetadataValue.int(outcome.evaluated),
            "result": dg.MetadataValue.md(outcome.markdown()),
        },
    )

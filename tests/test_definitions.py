"""The code location loads, and its assets run against the embedded stack."""

from __future__ import annotations

import subprocess
import sys

import dagster as dg

from lifecycle_pipelines.assets.platform import storage_layout_audit
from lifecycle_pipelines.environments import resources_for


def test_definitions_load() -> None:
    from lifecycle_pipelines.definitions import defs

    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    groups = {graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert {"platform", "archive", "search_sync", "warehouse"} <= groups
    assert defs.resolve_schedule_def("warehouse_hourly_schedule")
    assert defs.resolve_schedule_def("search_products_daily")
    search = graph.get(dg.AssetKey("search_products"))
    assert {c.name for c in search.check_keys} == {"schema", "completeness", "reconciliation"}
    assert defs.resolve_schedule_def("storage_layout_audit_daily")
    for name in ("orders", "user_activity"):
        archive = graph.get(dg.AssetKey(f"archive_{name}"))
        assert archive.partitions_def is not None
        assert {c.name for c in archive.check_keys} == {"schema", "completeness", "reconciliation"}
        assert dg.AssetKey(f"archive_{name}") in graph.get(dg.AssetKey(f"purge_{name}")).parent_keys
        assert defs.resolve_schedule_def(f"archive_{name}_monthly")
    assert defs.resolve_schedule_def("archive_restore_quarterly")
    assert defs.resolve_sensor_def("archive_restore_sensor")
    alerts = defs.resolve_sensor_def("failure_alerts")
    assert alerts.default_status == dg.DefaultSensorStatus.RUNNING
    assert alerts.required_resource_keys == {"alerts"}


def test_dagster_cli_validates_the_code_location() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dagster",
            "definitions",
            "validate",
            "-m",
            "lifecycle_pipelines.definitions",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_storage_layout_audit_passes_on_the_bootstrapped_stack(stack_info: object) -> None:
    result = dg.materialize([storage_layout_audit], resources=resources_for("local"))
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"buckets_match_spec": True, "dynamodb_tables_match_spec": True}
    metadata = result.asset_materializations_for_node("storage_layout_audit")[0].metadata
    assert metadata["findings"].value == 0

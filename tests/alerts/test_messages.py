"""Alert texts: what failed and where, within SNS's subject limit."""

from __future__ import annotations

from lifecycle_pipelines.alerts.messages import SUBJECT_LIMIT, check_failed, run_failed


def test_a_check_alert_names_asset_check_partition_severity_and_run() -> None:
    alert = check_failed(
        asset="archive_orders", check="reconciliation", partition="2024-01-01",
        severity="ERROR", blocking=True, run_id="r-1",
    )  # fmt: skip
    assert alert.subject == "[lifecycle] check failed: archive_orders reconciliation [2024-01-01]"
    for text in ("asset: archive_orders", "check: reconciliation", "partition: 2024-01-01",
                 "severity: ERROR (blocking", "run: r-1"):  # fmt: skip
        assert text in alert.message


def test_a_run_alert_names_job_partition_steps_and_error_classes_only() -> None:
    alert = run_failed(
        job="warehouse_hourly_job", run_id="r-2",
        tags={"dagster/partition": "2026-11-20-09:00", "owner": "x"},
        failed_steps=["warehouse_hourly"], error_classes=["OperationalError", "OperationalError"],
    )  # fmt: skip
    assert alert.subject == "[lifecycle] run failed: warehouse_hourly_job [2026-11-20-09:00]"
    assert "failed steps: warehouse_hourly" in alert.message
    assert "errors: OperationalError\n" in alert.message  # once, by class
    unpartitioned = run_failed(
        job="j", run_id="r", tags={}, failed_steps=[], error_classes=[], will_retry=True
    )
    assert "failed. Dagster will retry it." in unpartitioned.message
    assert "partition: -" in unpartitioned.message
    assert unpartitioned.subject == "[lifecycle] run failed: j"


def test_long_subjects_are_cut_to_the_sns_limit() -> None:
    alert = check_failed(
        asset="a" * 80, check="c" * 40, partition="p", severity="WARN", blocking=False, run_id="r"
    )
    assert len(alert.subject) == SUBJECT_LIMIT and alert.subject.endswith("...")
    assert "a" * 80 in alert.message  # the message keeps the whole name


def test_a_subject_is_printable_ascii_on_one_line() -> None:
    alert = check_failed(
        asset="a", check="c", partition="x\ny\u00e9", severity="ERROR", blocking=False, run_id="r"
    )
    assert alert.subject == "[lifecycle] check failed: a c [x?y?]"

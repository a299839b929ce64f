"""The `lifecycle` command's search and archive query against the running test stack."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from lifecycle_pipelines.assets.search_sync import search_products
from lifecycle_pipelines.cli import main
from lifecycle_pipelines.environments import resources_for


def test_search_prints_hits_from_the_configured_backend(
    stack_dir: Path, stack_info: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert dg.materialize(
        [search_products], resources=resources_for("local"), partition_key="2026-11-20"
    ).success
    assert main(["--state-dir", str(stack_dir), "search", "laptop", "--size", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert 1 <= len(lines) <= 3
    assert "laptop" in lines[0].lower()


def test_archive_query_reports_what_it_could_not_read(
    stack_dir: Path, stack_info: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--state-dir", str(stack_dir), "archive", "query", "SELECT 42 AS answer"]) == 0
    out = capsys.readouterr().out
    assert "42" in out and "-- 1 rows from" in out

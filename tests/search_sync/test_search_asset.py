"""`search_products` through Dagster: checks, metadata, bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import dagster as dg
import pytest

from lifecycle_pipelines.assets.search_sync import search_products
from lifecycle_pipelines.resources import SearchResource
from lifecycle_pipelines.search_sync import index_config
from tests.conftest import resources_with_shop
from tests.search_sync.conftest import SEARCH_SHOP_DB


def _resources(tmp_path: Path) -> dict[str, Any]:
    resources = resources_with_shop(SEARCH_SHOP_DB)
    resources["search"] = SearchResource(backend="tantivy", local_dir=str(tmp_path / "search"))
    return resources


def test_daily_sync_materializes_with_passing_checks(
    tmp_path: Path, search_shop: str, control_conn: Any
) -> None:
    result = dg.materialize(
        [search_products], resources=_resources(tmp_path), partition_key="2026-11-20"
    )
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"schema": True, "completeness": True, "reconciliation": True}
    metadata = result.asset_materializations_for_node("search_products")[0].metadata
    assert metadata["index"].value == "catalog-products-2026-11"
    assert metadata["rotated"].value is True
    assert (
        metadata["documents_in_index"].value == cast(int, metadata["documents_upserted"].value) > 0
    )


def test_a_malformed_synonyms_file_fails_before_any_index_exists(
    tmp_path: Path, search_shop: str, control_conn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "synonyms.txt"
    bad.write_text("Sofa, couch\n")
    monkeypatch.setattr(index_config, "SYNONYMS_FILE", bad)
    result = dg.materialize(
        [search_products],
        resources=_resources(tmp_path),
        partition_key="2026-11-20",
        raise_on_error=False,
    )
    assert not result.success
    failure = result.failure_data_for_node("search_products")
    assert failure is not None and "synonyms.txt: line 1" in str(failure.error)
    assert not (tmp_path / "search" / "indices" / "catalog-products-2026-11").exists()


def test_an_unknown_partition_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="2025-01-01"):
        dg.materialize(
            [search_products], resources=_resources(tmp_path), partition_key="2025-01-01"
        )

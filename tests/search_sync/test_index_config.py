"""Index naming, the template's analyzers and mappings, the synonyms file and the ISM policy."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from lifecycle_pipelines.search_sync.index_config import (
    ISM_POLICY_ID,
    SynonymsError,
    alias_name,
    index_name,
    index_template,
    ism_policy,
    load_synonyms,
)


def test_names_follow_spec_5_2() -> None:
    assert index_name(date(2026, 11, 25)) == "catalog-products-2026-11"
    assert alias_name() == "catalog-products"


def test_the_shipped_synonyms_load_into_the_template() -> None:
    rules = load_synonyms()
    template = index_template(rules)
    analysis = template["template"]["settings"]["analysis"]
    assert "tshirt, t-shirt, tee" in analysis["filter"]["product_synonyms"]["synonyms"]
    assert analysis["filter"]["product_edge_ngram"]["min_gram"] == 2
    assert template["template"]["mappings"]["dynamic"] == "strict"
    name = template["template"]["mappings"]["properties"]["name"]
    assert set(name["fields"]) == {"ngram", "en", "de"}
    assert (
        template["template"]["settings"]["plugins.index_state_management.policy_id"]
        == ISM_POLICY_ID
    )
    assert template["index_patterns"] == ["catalog-products-*"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Sofa, couch", "line 2: 'Sofa' is not a lower-case term"),
        ("lonely", "line 2: a rule needs at least two terms"),
        ("a => b => c", "line 2: more than one '=>'"),
        ("tv, , television", "line 2: '' is not a lower-case term"),
    ],
)
def test_a_malformed_synonyms_file_names_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "synonyms.txt"
    path.write_text(f"# header\n{line}\n")
    with pytest.raises(SynonymsError, match=f"synonyms.txt: {message}"):
        load_synonyms(path)


def test_ism_policy_ages() -> None:
    states = ism_policy()["policy"]["states"]
    ages = [t["conditions"]["min_index_age"] for s in states for t in s["transitions"]]
    assert [s["name"] for s in states] == ["hot", "warm", "cold", "delete"]
    assert ages == ["30d", "90d", "365d"]

"""The local engine honours the product index body: n-grams, synonyms, two languages."""

from __future__ import annotations

from pathlib import Path

from lifecycle_pipelines.resources.search.tantivy_backend import TantivyBackend
from lifecycle_pipelines.resources.search.tantivy_schema import expand_query
from lifecycle_pipelines.search_sync.index_config import index_body, load_synonyms

DOCS = [
    ("1", {"product_id": 1, "name": "Organic Cotton Tee", "description": "Soft shirt"}),
    ("2", {"product_id": 2, "name": "Leather Couch", "description": "Three seats"}),
    ("3", {"product_id": 3, "name": "Wanderschuhe Alpin", "description": "Schuhe für Berge"}),
    ("4", {"product_id": 4, "name": "Wireless Headset", "description": "Noise cancelling"}),
]


def _engine(tmp_path: Path) -> TantivyBackend:
    engine = TantivyBackend(tmp_path)
    engine.create_index("catalog-products-2026-11", index_body(load_synonyms()))
    engine.bulk_upsert("catalog-products-2026-11", DOCS)
    engine.swap_alias("catalog-products", "catalog-products-2026-11")
    return engine


def _ids(engine: TantivyBackend, query: str) -> list[str]:
    hits = engine.search("catalog-products", query, ["name", "description"], size=5)
    return [hit.doc_id for hit in hits]


def test_synonyms_find_products_named_otherwise(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    assert _ids(engine, "sofa")[0] == "2"
    assert _ids(engine, "t-shirt")[0] == "1"
    assert _ids(engine, "earphones")[0] == "4"


def test_partial_and_misspelt_words_match_through_ngrams(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    assert _ids(engine, "leat")[0] == "2"
    assert _ids(engine, "wirel")[0] == "4"
    assert _ids(engine, "lether cuoch")[0] == "2"
    assert _ids(engine, "hedset")[0] == "4"


def test_german_stemming(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    assert _ids(engine, "Schuh")[0] == "3"


def test_query_expansion() -> None:
    rules = [(["sofa", "couch"], ["sofa", "couch"]), (["tv"], ["television"])]
    assert expand_query("red sofa", rules) == ["red sofa", "red couch"]
    assert expand_query("TV stand", rules) == ["TV stand", "television stand"]

"""Search backends: tantivy locally, OpenSearch over real HTTP (pytest-httpserver)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from lifecycle_pipelines.resources.search import IndexNotFound
from lifecycle_pipelines.resources.search.opensearch import OpenSearchBackend
from lifecycle_pipelines.resources.search.tantivy_backend import TantivyBackend

BODY = {
    "settings": {"number_of_shards": 1},
    "mappings": {
        "dynamic": "strict",
        "properties": {
            "name": {
                "type": "text",
                "fields": {"ngram": {"type": "text", "analyzer": "edge_ngram"}},
            },
            "brand": {"type": "keyword"},
            "price": {"type": "scaled_float", "scaling_factor": 100},
            "in_stock": {"type": "boolean"},
        },
    },
}
DOCS = [
    (
        "1",
        {
            "name": "Nordwave Wireless Headphones",
            "brand": "Nordwave",
            "price": 99.5,
            "in_stock": True,
        },
    ),
    ("2", {"name": "Lumora Compact Speakers", "brand": "Lumora", "price": 45.0, "in_stock": False}),
]


def test_tantivy_index_search_alias_delete(tmp_path: Path) -> None:
    backend = TantivyBackend(tmp_path)
    backend.create_index("catalog-products-2026-11", BODY)
    result = backend.bulk_upsert("catalog-products-2026-11", DOCS)
    assert result.indexed == 2 and not result.errors
    backend.swap_alias("catalog-products", "catalog-products-2026-11")
    assert backend.count("catalog-products") == 2
    partial = backend.search("catalog-products", "headph", ["name"])
    assert [hit.doc_id for hit in partial] == ["1"]
    assert partial[0].source["brand"] == "Nordwave"
    stemmed = backend.search("catalog-products", "speaker", ["name"])
    assert [hit.doc_id for hit in stemmed] == ["2"]
    # upsert replaces, never duplicates
    backend.bulk_upsert("catalog-products-2026-11", [("1", {**DOCS[0][1], "price": 89.0})])
    assert backend.count("catalog-products") == 2
    backend.bulk_delete("catalog-products-2026-11", ["2"])
    assert backend.count("catalog-products") == 1
    # the alias moves atomically and reopening registers the analyzers again
    backend.create_index("catalog-products-2026-12", BODY)
    backend.swap_alias("catalog-products", "catalog-products-2026-12")
    assert backend.alias_targets("catalog-products") == ["catalog-products-2026-12"]
    reopened = TantivyBackend(tmp_path)
    assert reopened.search("catalog-products-2026-11", "wirel", ["name"])[0].doc_id == "1"
    with pytest.raises(IndexNotFound):
        reopened.count("nope")
    with pytest.raises(ValueError, match="index"):
        reopened.create_index("Bad Name", BODY)


def test_opensearch_bulk_alias_and_per_document_errors(httpserver: HTTPServer) -> None:
    seen: list[tuple[str, str]] = []

    def record(request: Request) -> Response:
        seen.append((request.path, request.get_data(as_text=True)))
        return Response("{}", content_type="application/json")

    httpserver.expect_request("/catalog-products-2026-11", method="PUT").respond_with_handler(
        record
    )
    httpserver.expect_request("/_alias/catalog-products", method="GET").respond_with_json(
        {"catalog-products-2026-10": {"aliases": {"catalog-products": {}}}}
    )
    httpserver.expect_request("/_aliases", method="POST").respond_with_handler(record)
    httpserver.expect_request("/_bulk", method="POST").respond_with_json(
        {
            "errors": True,
            "items": [
                {"index": {"_id": "1", "status": 201}},
                {
                    "index": {
                        "_id": "2",
                        "status": 400,
                        "error": {"type": "strict_dynamic_mapping_exception"},
                    }
                },
            ],
        }
    )
    backend = OpenSearchBackend.connect(httpserver.url_for("/").rstrip("/"), max_retries=0)
    backend.create_index("catalog-products-2026-11", BODY)
    assert json.loads(seen[0][1]) == BODY
    backend.swap_alias("catalog-products", "catalog-products-2026-11")
    assert json.loads(seen[1][1]) == {
        "actions": [
            {"remove": {"index": "catalog-products-2026-10", "alias": "catalog-products"}},
            {"add": {"index": "catalog-products-2026-11", "alias": "catalog-products"}},
        ]
    }
    result = backend.bulk_upsert("catalog-products-2026-11", DOCS)
    assert result.indexed == 1
    assert [(e.doc_id, e.status, e.reason) for e in result.errors] == [
        ("2", 400, "strict_dynamic_mapping_exception")
    ]
    bulk_lines = [
        json.loads(line) for line in httpserver.log[-1][0].get_data(as_text=True).splitlines()
    ]
    assert bulk_lines[0] == {"index": {"_index": "catalog-products-2026-11", "_id": "1"}}
    assert bulk_lines[1] == DOCS[0][1]


@pytest.mark.live
@pytest.mark.skipif(
    "OPENSEARCH_URL" not in __import__("os").environ, reason="opt-in: set OPENSEARCH_URL"
)
def test_live_opensearch_round_trip() -> None:
    import os
    import uuid

    backend = OpenSearchBackend.connect(os.environ["OPENSEARCH_URL"])
    index = f"lifecycle-test-{uuid.uuid4().hex[:8]}"
    try:
        backend.create_index(index, {"mappings": {"properties": {"name": {"type": "text"}}}})
        assert not backend.bulk_upsert(index, [("1", {"name": "live test"})]).errors
        backend.refresh(index)
        assert backend.count(index) == 1
    finally:
        backend.delete_index(index)

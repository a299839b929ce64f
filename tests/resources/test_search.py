"""Search backends: tantivy locally, OpenSearch over real HTTP (pytest-httpserver)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from lifecycle_pipelines.resources.search import IndexNotFound
from lifecycle_pipelines.resources.search.base import SearchOperationError, index_pattern
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


EVENTS_BODY = {
    "mappings": {
        "dynamic": "strict",
        "properties": {
            "user_id": {"type": "keyword"},
            "session_id": {"type": "keyword"},
            "user_agent": {"type": "text"},
        },
    }
}


def test_index_pattern_wildcards_and_bad_patterns() -> None:
    assert index_pattern("users-activity-*").match("users-activity-2026-10")
    assert not index_pattern("users-activity-*").match("users-activityx")
    assert index_pattern("a.b-*").match("a.b-1") and not index_pattern("a.b-*").match("aXb-1")
    for bad in ("", "Users-*", "a,b", "a b", "users-activity-2026-1?"):
        with pytest.raises(ValueError, match="pattern"):
            index_pattern(bad)


def test_tantivy_list_count_and_delete_by_term(tmp_path: Path) -> None:
    backend = TantivyBackend(tmp_path)
    assert backend.list_indices("users-activity-*") == []
    for index in ("users-activity-2026-10", "users-activity-2026-09", "catalog-products-2026-11"):
        backend.create_index(index, EVENTS_BODY)
    backend.swap_alias("users-activity-current", "users-activity-2026-10")
    assert backend.list_indices("users-activity-*") == [
        "users-activity-2026-09",
        "users-activity-2026-10",
    ]
    assert backend.list_indices("users-activity-2026-10") == ["users-activity-2026-10"]
    assert backend.list_indices("nothing-*") == []
    # raw keyword terms: ids with hyphens and case survive untokenised
    docs = [
        ("1", {"user_id": "u-42", "session_id": "s1", "user_agent": "Mozilla u-42"}),
        ("2", {"user_id": "u-42", "session_id": "s2"}),
        ("3", {"user_id": "U-42", "session_id": "s3"}),
        ("4", {"user_id": "u-420", "session_id": "s4"}),
    ]
    assert not backend.bulk_upsert("users-activity-2026-10", docs).errors
    assert backend.count_term("users-activity-2026-10", "user_id", "u-42") == 2
    assert backend.count_term("users-activity-2026-10", "user_id", "u-4") == 0
    assert backend.count_term("users-activity-2026-09", "user_id", "u-42") == 0
    assert backend.delete_by_term("users-activity-2026-10", "user_id", "u-42") == 2
    # visible at once, to a fresh backend too
    assert backend.count_term("users-activity-2026-10", "user_id", "u-42") == 0
    assert backend.count("users-activity-2026-10") == 2
    assert backend.search("users-activity-2026-10", "mozilla", ["user_agent"]) == []
    reopened = TantivyBackend(tmp_path)
    assert reopened.count_term("users-activity-2026-10", "user_id", "U-42") == 1
    assert reopened.delete_by_term("users-activity-2026-10", "user_id", "u-42") == 0
    with pytest.raises(ValueError, match="keyword field"):
        reopened.count_term("users-activity-2026-10", "user_agent", "mozilla")
    with pytest.raises(ValueError, match="keyword field"):
        reopened.delete_by_term("users-activity-2026-10", "unknown", "x")
    with pytest.raises(IndexNotFound):
        reopened.count_term("users-activity-2026-08", "user_id", "u-42")


def test_opensearch_list_indices_excludes_aliased_and_unmatched(httpserver: HTTPServer) -> None:
    responses = iter(
        [
            {
                "users-activity-2026-10": {"settings": {"index": {"uuid": "a"}}},
                "users-activity-2026-09": {"settings": {"index": {"uuid": "b"}}},
                # the target of an alias named like the pattern
                "legacy-activity": {"settings": {"index": {"uuid": "c"}}},
            },
            {},
        ]
    )
    httpserver.expect_request("/users-activity-*", method="GET").respond_with_handler(
        lambda _request: Response(json.dumps(next(responses)), content_type="application/json")
    )
    backend = OpenSearchBackend.connect(httpserver.url_for("/").rstrip("/"), max_retries=0)
    assert backend.list_indices("users-activity-*") == [
        "users-activity-2026-09",
        "users-activity-2026-10",
    ]
    assert backend.list_indices("users-activity-*") == []
    request = httpserver.log[0][0]
    assert dict(request.args) == {
        "allow_no_indices": "true",
        "ignore_unavailable": "true",
        "expand_wildcards": "open,closed",
        "filter_path": "*.settings.index.uuid",
    }
    with pytest.raises(ValueError, match="pattern"):
        backend.list_indices("users activity")


def test_opensearch_count_and_delete_by_term_bodies(httpserver: HTTPServer) -> None:
    term = {"query": {"term": {"user_id": "42"}}}
    httpserver.expect_request(
        "/users-activity-2026-10/_count", method="POST", json=term
    ).respond_with_json({"count": 3})
    httpserver.expect_request(
        "/users-activity-2026-10/_delete_by_query",
        method="POST",
        json=term,
        query_string={"refresh": "true", "conflicts": "proceed"},
    ).respond_with_json(
        {
            "took": 5,
            "timed_out": False,
            "total": 3,
            "deleted": 3,
            "version_conflicts": 0,
            "failures": [],
        }
    )
    httpserver.expect_request("/users-activity-2026-01/_count", method="POST").respond_with_json(
        {"error": {"type": "index_not_found_exception"}, "status": 404}, status=404
    )
    httpserver.expect_request(
        "/users-activity-2026-01/_delete_by_query", method="POST"
    ).respond_with_json({"error": {"type": "index_not_found_exception"}, "status": 404}, status=404)
    backend = OpenSearchBackend.connect(httpserver.url_for("/").rstrip("/"), max_retries=0)
    assert backend.count_term("users-activity-2026-10", "user_id", "42") == 3
    assert backend.delete_by_term("users-activity-2026-10", "user_id", "42") == 3
    with pytest.raises(IndexNotFound):
        backend.count_term("users-activity-2026-01", "user_id", "42")
    with pytest.raises(IndexNotFound):
        backend.delete_by_term("users-activity-2026-01", "user_id", "42")


def test_opensearch_delete_by_term_failures_raise_without_values(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/i/_delete_by_query", method="POST").respond_with_json(
        {
            "deleted": 1,
            "version_conflicts": 0,
            "failures": [
                {
                    "index": "i",
                    "id": "9",
                    "status": 400,
                    "cause": {"type": "mapper_exception", "reason": "bad value secret@x.org"},
                }
            ],
        }
    )
    waits: list[float] = []
    backend = OpenSearchBackend.connect(httpserver.url_for("/").rstrip("/"), max_retries=0)
    backend.sleep = waits.append
    with pytest.raises(
        SearchOperationError, match=r"1 failures \(mapper_exception \(400\)\)"
    ) as err:
        backend.delete_by_term("i", "user_id", "42")
    assert "secret@x.org" not in str(err.value) and "42" not in str(err.value)
    assert waits == [] and len(httpserver.log) == 1


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

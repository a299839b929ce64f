"""Search backends: tantivy locally, OpenSearch over real HTTP (pytest-httpserver)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from lifecycle_pipelines.resources.search import IndexNotFound
from lifecycle_pipelines.resources.search.base import SearchOperationError, index_pattern
from lifecycle_pipelines.resources.search.opensearch import OpenSearchBackend
from lifecycle_pipelines.resources.search.tantivy_backend import TantivyBackend
from lifecycle_pipelines.resources.search.tantivy_documents import table_documents
from lifecycle_pipelines.resources.search.tantivy_schema import int_id

# Read at import: the session fixture removes OPENSEARCH_* before tests run.
LIVE_OPENSEARCH_URL = os.environ.get("OPENSEARCH_URL")

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


TABLE_BODY = {
    "mappings": {
        "dynamic": "strict",
        "properties": {
            "product_id": {"type": "long"},
            "name": {
                "type": "text",
                "fields": {
                    "ngram": {"type": "text", "analyzer": "edge_ngram"},
                    "en": {"type": "text", "analyzer": "english"},
                },
            },
            "tags": {"type": "keyword"},
            "price": {"type": "scaled_float", "scaling_factor": 100},
            "in_stock": {"type": "boolean"},
            "updated_at": {"type": "date"},
        },
    }
}
AWKWARD_ROWS: list[dict[str, Any]] = [
    {
        "product_id": 1,
        "name": 'Crème "Brûlée" \\ Torch\nXL',
        "tags": ["kitchen", 'say "hi"'],
        "price": 45.0,
        "in_stock": True,
        "updated_at": "2026-11-24T23:00:00.123456Z",
    },
    {
        "product_id": 2,
        "name": "Straße-Schuhe für Berge, size 9½ 🥾",
        "tags": None,
        "price": 0.30000000000000004,
        "in_stock": False,
        "updated_at": "2026-11-25T01:02:03+01:00",
    },
    {
        "product_id": 3,
        "name": None,
        "tags": [],
        "price": None,
        "in_stock": None,
        "updated_at": None,
    },
    {
        "product_id": 4,
        "name": "\tTab\tand trailing!",
        "tags": ["x"],
        "price": 1e16,
        "in_stock": True,
        "updated_at": "1969-12-31T23:59:59.999999Z",
    },
]
TABLE_SCHEMA = pa.schema(
    [
        ("product_id", pa.int64()),
        ("name", pa.string()),
        ("tags", pa.list_(pa.string())),
        ("price", pa.float64()),
        ("in_stock", pa.bool_()),
        ("updated_at", pa.string()),
    ]
)


def _comparable(document: str) -> dict[str, object]:
    doc = json.loads(document)
    doc["_source"] = json.loads(base64.b64decode(doc["_source"]))
    # one-letter words give no 2-15 character grams: the row path drops them, the table path not
    doc["name__ngram"] = [w for w in doc.get("name__ngram", []) if len(w) > 1]
    return doc


def test_tantivy_table_documents_equal_the_per_document_path(tmp_path: Path) -> None:
    backend = TantivyBackend(tmp_path)
    backend.create_index("t", TABLE_BODY)
    _, kinds = backend._index("t")
    plan = backend._plan(kinds)
    table = pa.Table.from_pylist(AWKWARD_ROWS, schema=TABLE_SCHEMA)
    built = table_documents(table, "product_id", plan, kinds)
    assert built is not None
    ids, documents = built
    assert list(ids) == [1, 2, 3, 4]
    for row, document in zip(AWKWARD_ROWS, documents.to_pylist(), strict=True):
        expected = backend._document(str(row["product_id"]), row, plan, True)
        assert _comparable(document) == _comparable(expected)
    # values only the per-document path writes: a control character, NaN, a text id
    bell = table.set_column(1, "name", pa.array(["ring\x07"] * 4))
    nan = table.set_column(3, "price", pa.array([float("nan")] * 4))
    for odd in (bell, nan, table.set_column(0, "product_id", pa.array(["a", "b", "c", "d"]))):
        assert table_documents(odd, "product_id", plan, kinds) is None
    assert backend.bulk_upsert_table("t", bell, "product_id").indexed == 4
    assert backend.search("t", "ring", ["name"])[0].source["name"] == "ring\x07"


def test_only_canonical_integer_ids_get_the_integer_column() -> None:
    assert [int_id(i) for i in ("42", "-7", "0", "9223372036854775807")] == [
        42,
        -7,
        0,
        2**63 - 1,
    ]
    assert [int_id(i) for i in ("042", "+7", "4_2", "٣", " 1", "9223372036854775808", "a")] == [
        None
    ] * 7


def test_tantivy_table_upsert_finds_replaces_and_refuses_like_rows(tmp_path: Path) -> None:
    backend = TantivyBackend(tmp_path)
    backend.create_index("t", TABLE_BODY)
    table = pa.Table.from_pylist(AWKWARD_ROWS, schema=TABLE_SCHEMA)
    result = backend.bulk_upsert_table("t", table, "product_id")
    assert result.indexed == 4 and not result.errors
    assert [h.doc_id for h in backend.search("t", "brulee", ["name"])] == ["1"]
    assert [h.doc_id for h in backend.search("t", "strass", ["name"])] == ["2"]  # n-gram
    assert backend.search("t", "torch", ["name"])[0].source["price"] == 45.0
    # replaces by id, never duplicates
    again = table.slice(0, 2).set_column(3, "price", pa.array([1.0, 2.0]))
    assert backend.bulk_upsert_table("t", again, "product_id").indexed == 2
    assert backend.count("t") == 4
    # a column the mapping lacks refuses every row; a value of the wrong kind refuses its row
    extra = table.append_column("colour", pa.array(["red"] * 4))
    refused = backend.bulk_upsert_table("t", extra, "product_id")
    assert refused.indexed == 0
    assert {(e.doc_id, e.status) for e in refused.errors} == {(str(i), 400) for i in (1, 2, 3, 4)}
    assert "strict_dynamic_mapping_exception" in refused.errors[0].reason
    bad = pa.table({"product_id": [7, 8], "updated_at": ["2026-11-24T23:00:00Z", "yesterday"]})
    mixed = backend.bulk_upsert_table("t", bad, "product_id")
    assert mixed.indexed == 1 and [(e.doc_id, e.status) for e in mixed.errors] == [("8", 400)]
    assert "mapper_parsing_exception" in mixed.errors[0].reason


def test_tantivy_scan_versions_reads_fast_columns_with_microseconds(tmp_path: Path) -> None:
    backend = TantivyBackend(tmp_path)
    backend.create_index("t", TABLE_BODY)
    table = pa.Table.from_pylist(AWKWARD_ROWS, schema=TABLE_SCHEMA)
    backend.bulk_upsert_table("t", table.filter(pa.array([True, True, False, True])), "product_id")
    backend.bulk_upsert("t", [("10", {"updated_at": "2026-11-24T23:00:00.000001Z"})])
    backend.bulk_delete("t", ["2"])
    backend.refresh("t")
    scanned = backend.scan_versions("t", "updated_at")
    assert scanned is not None
    ids, micros = scanned
    assert ids.tolist() == [1, 4, 10]
    assert micros.tolist() == [1795561200123456, -1, 1795561200000001]
    assert sorted(backend.scan_field("t", "updated_at")) == [
        ("1", "2026-11-24T23:00:00.123456Z"),
        ("10", "2026-11-24T23:00:00.000001Z"),
        ("4", "1969-12-31T23:59:59.999999Z"),
    ]
    # a document without the value (or an index built before these columns): not scannable
    backend.bulk_upsert("t", [("3", {"product_id": 3})])
    assert backend.scan_versions("t", "updated_at") is None


def test_tantivy_bulk_session_commits_once_and_on_refresh(tmp_path: Path) -> None:
    backend = TantivyBackend(tmp_path)
    backend.create_index("t", TABLE_BODY)
    table = pa.Table.from_pylist(AWKWARD_ROWS, schema=TABLE_SCHEMA)
    with backend.bulk_session("t"):
        backend.bulk_upsert_table("t", table.slice(0, 2), "product_id")
        assert backend.count("t") == 0  # not visible before a refresh, as with OpenSearch
        backend.refresh("t")
        assert backend.count("t") == 2
        # ids not ascending past what the session wrote: upserts replace, never duplicate
        backend.bulk_upsert_table("t", table.slice(1, 3), "product_id")
        backend.bulk_upsert("t", [("1", {"product_id": 1})])
        backend.bulk_delete("t", ["4"])
        with pytest.raises(RuntimeError, match="already open"), backend.bulk_session("t"):
            pass
    assert backend.count("t") == 3
    with pytest.raises(ZeroDivisionError), backend.bulk_session("t"):
        backend.bulk_upsert_table("t", table.slice(3, 1), "product_id")
        1 / 0  # noqa: B018
    assert backend.count("t") == 4  # what was written before the failure stays
    # another writer (here: delete by term) works once the session is over
    assert TantivyBackend(tmp_path).delete_by_term("t", "tags", "x") == 1


@pytest.mark.live
@pytest.mark.skipif(LIVE_OPENSEARCH_URL is None, reason="opt-in: set OPENSEARCH_URL")
def test_live_opensearch_round_trip() -> None:
    import uuid

    backend = OpenSearchBackend.connect(LIVE_OPENSEARCH_URL or "")
    index = f"lifecycle-test-{uuid.uuid4().hex[:8]}"
    try:
        backend.create_index(index, {"mappings": {"properties": {"name": {"type": "text"}}}})
        assert not backend.bulk_upsert(index, [("1", {"name": "live test"})]).errors
        backend.refresh(index)
        assert backend.count(index) == 1
    finally:
        backend.delete_index(index)

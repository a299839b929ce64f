"""The OpenSearch side of the sync over real HTTP: the exact template and ISM bodies, and bulk
items throttled with 429 retried while refused ones fail the write."""

from __future__ import annotations

import json
import os

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from lifecycle_pipelines.resources.search.base import SearchOperationError
from lifecycle_pipelines.resources.search.opensearch import OpenSearchBackend
from lifecycle_pipelines.search_sync.bulk import BulkFailure, bulk_with_retry
from lifecycle_pipelines.search_sync.index_config import (
    ISM_POLICY_ID,
    index_template,
    ism_policy,
    load_synonyms,
)

# Read at import: the session fixture removes OPENSEARCH_* before tests run.
LIVE_OPENSEARCH_URL = os.environ.get("OPENSEARCH_URL")


def _backend(httpserver: HTTPServer) -> OpenSearchBackend:
    return OpenSearchBackend.connect(httpserver.url_for("/").rstrip("/"), max_retries=0)


def test_template_and_ism_policy_bodies(httpserver: HTTPServer) -> None:
    bodies: dict[str, object] = {}

    def record(request: Request) -> Response:
        bodies[f"{request.method} {request.path}"] = json.loads(request.get_data(as_text=True))
        return Response('{"acknowledged": true}', content_type="application/json")

    policy_path = f"/_plugins/_ism/policies/{ISM_POLICY_ID}"
    httpserver.expect_request(policy_path, method="GET").respond_with_json(
        {"_seq_no": 7, "_primary_term": 2, "policy": {}}
    )
    httpserver.expect_request(policy_path, method="PUT").respond_with_handler(record)
    httpserver.expect_request(
        "/_index_template/catalog-products", method="PUT"
    ).respond_with_handler(record)
    backend = _backend(httpserver)
    rules = load_synonyms()
    backend.put_lifecycle_policy(ISM_POLICY_ID, ism_policy())
    backend.put_index_template("catalog-products", index_template(rules))

    assert bodies[f"PUT {policy_path}"] == ism_policy()
    put_policy = next(r for r, _ in httpserver.log if r.method == "PUT" and r.path == policy_path)
    assert dict(put_policy.args) == {"if_seq_no": "7", "if_primary_term": "2"}
    template = bodies["PUT /_index_template/catalog-products"]
    assert template == index_template(rules)
    assert template["template"]["mappings"]["dynamic"] == "strict"


def test_throttled_items_are_retried_and_refused_ones_reported(httpserver: HTTPServer) -> None:
    responses = iter(
        [
            {
                "errors": True,
                "items": [
                    {"index": {"_id": "1", "status": 201}},
                    {
                        "index": {
                            "_id": "2",
                            "status": 429,
                            "error": {"type": "es_rejected_execution_exception"},
                        }
                    },
                    {
                        "index": {
                            "_id": "3",
                            "status": 400,
                            "error": {"type": "mapper_parsing_exception"},
                        }
                    },
                ],
            },
            {"errors": False, "items": [{"index": {"_id": "2", "status": 201}}]},
        ]
    )
    sent: list[list[str]] = []

    def bulk(request: Request) -> Response:
        lines = [json.loads(line) for line in request.get_data(as_text=True).splitlines()]
        sent.append([line["index"]["_id"] for line in lines if "index" in line])
        return Response(json.dumps(next(responses)), content_type="application/json")

    httpserver.expect_request("/_bulk", method="POST").respond_with_handler(bulk)
    backend = _backend(httpserver)
    docs = [(str(i), {"product_id": i}) for i in (1, 2, 3)]
    waits: list[float] = []
    outcome = bulk_with_retry(
        lambda items: backend.bulk_upsert("catalog-products-2026-11", items),
        docs,
        lambda item: item[0],
        sleep=waits.append,
    )
    assert sent == [["1", "2", "3"], ["2"]]
    assert outcome.written == 2 and outcome.retries == 1 and waits == [0.5]
    assert [(e.doc_id, e.status) for e in outcome.errors] == [("3", 400)]
    with pytest.raises(BulkFailure, match="3: 400 mapper_parsing_exception"):
        raise BulkFailure(outcome.errors)


def test_a_throttled_request_is_retried_with_backoff(httpserver: HTTPServer) -> None:
    calls = {"n": 0}

    def bulk(request: Request) -> Response:
        calls["n"] += 1
        if calls["n"] == 1:
            return Response('{"error": "too many requests"}', status=429)
        return Response(
            json.dumps({"errors": False, "items": [{"index": {"_id": "1", "status": 200}}]}),
            content_type="application/json",
        )

    httpserver.expect_request("/_bulk", method="POST").respond_with_handler(bulk)
    backend = _backend(httpserver)
    waits: list[float] = []
    outcome = bulk_with_retry(
        lambda items: backend.bulk_upsert("i", items),
        [("1", {})],
        lambda i: i[0],
        sleep=waits.append,
    )
    assert outcome.written == 1 and waits == [0.5]


def _delete_by_query_replies(
    httpserver: HTTPServer, replies: list[tuple[int, dict[str, object]]]
) -> list[dict[str, object]]:
    """Serve `replies` (status, body) in turn to _delete_by_query; returns the bodies sent."""
    pending = iter(replies)
    sent: list[dict[str, object]] = []

    def handler(request: Request) -> Response:
        assert dict(request.args) == {"refresh": "true", "conflicts": "proceed"}
        sent.append(json.loads(request.get_data(as_text=True)))
        status, body = next(pending)
        return Response(json.dumps(body), status=status, content_type="application/json")

    httpserver.expect_request(
        "/users-activity-2026-10/_delete_by_query", method="POST"
    ).respond_with_handler(handler)
    return sent


def test_delete_by_term_retries_throttling_and_conflicts(httpserver: HTTPServer) -> None:
    throttled = {"status": 429, "cause": {"type": "es_rejected_execution_exception"}}
    sent = _delete_by_query_replies(
        httpserver,
        [
            (429, {"error": {"type": "es_rejected_execution_exception"}, "status": 429}),
            (200, {"deleted": 2, "version_conflicts": 0, "failures": [throttled, throttled]}),
            (200, {"deleted": 1, "version_conflicts": 1, "failures": []}),
            (200, {"deleted": 1, "version_conflicts": 0, "failures": []}),
        ],
    )
    waits: list[float] = []
    backend = _backend(httpserver)
    backend.sleep = waits.append
    assert backend.delete_by_term("users-activity-2026-10", "user_id", "42") == 4
    assert sent == [{"query": {"term": {"user_id": "42"}}}] * 4
    assert waits == [0.5, 1.0, 2.0]


def test_delete_by_term_gives_up_on_lasting_conflicts(httpserver: HTTPServer) -> None:
    _delete_by_query_replies(
        httpserver, [(200, {"deleted": 0, "version_conflicts": 1, "failures": []})] * 3
    )
    waits: list[float] = []
    backend = _backend(httpserver)
    backend.sleep = waits.append
    backend.retry_attempts = 2
    with pytest.raises(SearchOperationError, match="1 version conflicts after 3 attempts"):
        backend.delete_by_term("users-activity-2026-10", "user_id", "42")
    assert waits == [0.5, 1.0]


@pytest.mark.live
@pytest.mark.skipif(LIVE_OPENSEARCH_URL is None, reason="opt-in: set OPENSEARCH_URL")
def test_live_rotation_and_increment(shop_conn: object, control_conn: object) -> None:
    """Against a real cluster: rotate into a fresh month index, then an increment."""
    from datetime import date

    from lifecycle_pipelines.search_sync.sync import ProductSync

    backend = OpenSearchBackend.connect(LIVE_OPENSEARCH_URL or "")
    sync = ProductSync(backend, shop_conn, control_conn, load_synonyms())  # type: ignore[arg-type]
    report = sync.run(date(2026, 11, 20))
    assert report.reconciliation is not None and report.reconciliation.matches
    again = sync.run(date(2026, 11, 21))
    assert not again.rotated and again.reconciliation is not None
    assert again.reconciliation.matches

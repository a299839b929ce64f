"""OpenSearch backend (Amazon OpenSearch Service with SigV4, or any OpenSearch over HTTP)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from opensearchpy import OpenSearch, RequestsHttpConnection
from opensearchpy.exceptions import NotFoundError, TransportError

from lifecycle_pipelines.resources.search.base import (
    BulkItemError,
    BulkResult,
    IndexNotFound,
    SearchHit,
    SearchOperationError,
    index_pattern,
)

log = logging.getLogger(__name__)


def _failure_status(failure: Mapping[str, Any]) -> int | None:
    status = failure.get("status")
    return status if isinstance(status, int) else None


def _failure_types(failures: Sequence[Mapping[str, Any]]) -> str:
    """The distinct error types of delete-by-query failures (types only: a reason text or a
    cause can quote document values)."""
    types: list[str] = []
    for failure in failures:
        cause = failure.get("cause") or failure.get("reason") or {}
        kind = cause.get("type", "error") if isinstance(cause, Mapping) else "error"
        status = _failure_status(failure)
        types.append(f"{kind} ({status})" if status is not None else str(kind))
    return ", ".join(sorted(set(types)))


class OpenSearchBackend:
    """The search sink on an OpenSearch cluster through opensearch-py."""

    #: delete-by-query attempts after the first when throttled (429) or in version conflict
    retry_attempts: int = 5
    #: first backoff delay; doubled after every retry
    retry_base_delay_seconds: float = 0.5

    def __init__(self, client: OpenSearch, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.sleep = sleep

    @classmethod
    def connect(
        cls,
        url: str,
        *,
        sigv4_region: str | None = None,
        sigv4_service: str = "es",
        username: str | None = None,
        password: str | None = None,
        verify_certs: bool = True,
        timeout_seconds: float = 30.0,
        max_retries: int = 3,
        credentials: Any = None,
    ) -> OpenSearchBackend:
        """A backend for `url`; SigV4-signed when `sigv4_region` is given (Amazon OpenSearch)."""
        http_auth: Any = None
        if sigv4_region is not None:
            from opensearchpy import AWSV4SignerAuth

            if credentials is None:
                import boto3

                credentials = boto3.session.Session().get_credentials()
            http_auth = AWSV4SignerAuth(credentials, sigv4_region, sigv4_service)
        elif username is not None:
            http_auth = (username, password or "")
        client = OpenSearch(
            hosts=[url],
            http_auth=http_auth,
            use_ssl=url.startswith("https://"),
            verify_certs=verify_certs,
            connection_class=RequestsHttpConnection,
            timeout=timeout_seconds,
            max_retries=max_retries,
            retry_on_status=(429, 502, 503, 504),
            retry_on_timeout=True,
        )
        return cls(client)

    def ping(self) -> bool:
        return bool(self.client.ping())

    def index_exists(self, index: str) -> bool:
        return bool(self.client.indices.exists(index=index))

    def create_index(self, index: str, body: Mapping[str, Any]) -> None:
        self.client.indices.create(index=index, body=dict(body))

    def delete_index(self, index: str) -> None:
        self.client.indices.delete(index=index, ignore_unavailable=True)

    def alias_targets(self, alias: str) -> list[str]:
        try:
            response = self.client.indices.get_alias(name=alias)
        except NotFoundError:
            return []
        return sorted(response.keys())

    def swap_alias(self, alias: str, new_index: str) -> None:
        actions: list[dict[str, Any]] = [
            {"remove": {"index": old, "alias": alias}}
            for old in self.alias_targets(alias)
            if old != new_index
        ]
        actions.append({"add": {"index": new_index, "alias": alias}})
        self.client.indices.update_aliases(body={"actions": actions})

    def _bulk(self, body: list[dict[str, Any]], action: str) -> BulkResult:
        result = BulkResult()
        if not body:
            return result
        response = self.client.bulk(body=body)
        for item in response.get("items", []):
            outcome = item.get(action, {})
            status = int(outcome.get("status", 500))
            doc_id = str(outcome.get("_id", ""))
            if action == "delete" and status == 404:
                continue
            if status >= 300:
                error = outcome.get("error", {})
                reason = error.get("type", "error") if isinstance(error, dict) else str(error)
                result.errors.append(BulkItemError(doc_id, status, str(reason)))
            elif action == "index":
                result.indexed += 1
            else:
                result.deleted += 1
        return result

    def bulk_upsert(self, index: str, docs: Iterable[tuple[str, Mapping[str, Any]]]) -> BulkResult:
        body: list[dict[str, Any]] = []
        for doc_id, source in docs:
            body.append({"index": {"_index": index, "_id": doc_id}})
            body.append(dict(source))
        return self._bulk(body, "index")

    def bulk_delete(self, index: str, doc_ids: Sequence[str]) -> BulkResult:
        body = [{"delete": {"_index": index, "_id": doc_id}} for doc_id in doc_ids]
        return self._bulk(body, "delete")

    def refresh(self, index: str) -> None:
        self.client.indices.refresh(index=index)

    def count(self, index: str) -> int:
        try:
            return int(self.client.count(index=index)["count"])
        except NotFoundError as err:
            raise IndexNotFound(index) from err

    def search(
        self, index: str, query: str, fields: Sequence[str], size: int = 10
    ) -> list[SearchHit]:
        searched = [*fields, *(f"{f}.ngram" for f in fields if f == "name")]
        body = {
            "size": size,
            "query": {"multi_match": {"query": query, "fields": searched, "fuzziness": "AUTO"}},
        }
        response = self.client.search(index=index, body=body)
        return [
            SearchHit(str(hit["_id"]), float(hit["_score"] or 0.0), hit.get("_source", {}))
            for hit in response["hits"]["hits"]
        ]

    def put_index_template(self, name: str, body: Mapping[str, Any]) -> None:
        self.client.indices.put_index_template(name=name, body=dict(body))

    def put_lifecycle_policy(self, policy_id: str, body: Mapping[str, Any]) -> None:
        path = f"/_plugins/_ism/policies/{policy_id}"
        try:
            current = self.client.transport.perform_request("GET", path)
        except NotFoundError:
            self.client.transport.perform_request("PUT", path, body=dict(body))
            return
        params = {
            "if_seq_no": current["_seq_no"],
            "if_primary_term": current["_primary_term"],
        }
        self.client.transport.perform_request("PUT", path, params=params, body=dict(body))

    def scan_field(self, index: str, field: str) -> Iterator[tuple[str, Any]]:
        from opensearchpy.helpers import scan

        try:
            for hit in scan(
                self.client,
                index=index,
                query={"query": {"match_all": {}}, "_source": [field]},
                size=5_000,
                preserve_order=False,
            ):
                yield str(hit["_id"]), hit.get("_source", {}).get(field)
        except NotFoundError as err:
            raise IndexNotFound(index) from err

    def list_indices(self, pattern: str) -> list[str]:
        """Open and closed indices matching `pattern` (closed ones are listed so that a caller
        such as erasure fails on them instead of skipping them); hidden indices are not."""
        matches = index_pattern(pattern)
        response = self.client.indices.get(
            index=pattern,
            allow_no_indices=True,
            ignore_unavailable=True,
            expand_wildcards="open,closed",
            filter_path="*.settings.index.uuid",
        )
        # an alias in the pattern resolves to its indices, which need not match the pattern
        return sorted(name for name in (response or {}) if matches.match(name))

    def count_term(self, index: str, field: str, value: str) -> int:
        body = {"query": {"term": {field: value}}}
        try:
            return int(self.client.count(index=index, body=body)["count"])
        except NotFoundError as err:
            raise IndexNotFound(index) from err

    def delete_by_term(self, index: str, field: str, value: str) -> int:
        """`_delete_by_query` with a term query, refreshed; throttled runs (429) and documents
        changed concurrently (version conflicts) are retried with backoff until none remain;
        any other failure raises SearchOperationError."""
        body = {"query": {"term": {field: value}}}
        deleted = 0
        for attempt in range(self.retry_attempts + 1):
            last = attempt == self.retry_attempts
            try:
                response = self.client.delete_by_query(
                    index=index, body=body, refresh=True, conflicts="proceed"
                )
            except NotFoundError as err:
                raise IndexNotFound(index) from err
            except TransportError as exc:
                if exc.status_code != 429 or last:
                    raise
                log.warning("delete_by_query on %s throttled; retry %d", index, attempt + 1)
                self.sleep(self.retry_base_delay_seconds * 2**attempt)
                continue
            deleted += int(response.get("deleted", 0))
            failures = list(response.get("failures") or [])
            conflicts = int(response.get("version_conflicts", 0))
            timed_out = bool(response.get("timed_out", False))
            if failures:
                throttled = all(_failure_status(f) == 429 for f in failures)
                if not throttled or last:
                    raise SearchOperationError(
                        f"delete_by_query on {index}: {len(failures)} failures "
                        f"({_failure_types(failures)}); {deleted} documents deleted"
                    )
            elif conflicts == 0 and not timed_out:
                return deleted
            elif last:
                raise SearchOperationError(
                    f"delete_by_query on {index}: {conflicts} version conflicts"
                    f"{', timed out' if timed_out else ''} after {attempt + 1} attempts; "
                    f"{deleted} documents deleted"
                )
            log.warning(
                "delete_by_query on %s incomplete (%d failures, %d conflicts); retry %d",
                index,
                len(failures),
                conflicts,
                attempt + 1,
            )
            self.sleep(self.retry_base_delay_seconds * 2**attempt)
        return deleted

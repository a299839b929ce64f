"""Search engines behind one interface: OpenSearch (production) and tantivy (local)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from lifecycle_pipelines.resources.aws import AwsResource
from lifecycle_pipelines.resources.search.base import (
    BulkItemError,
    BulkResult,
    IndexNotFound,
    SearchBackend,
    SearchHit,
)

__all__ = [
    "BulkItemError",
    "BulkResult",
    "IndexNotFound",
    "SearchBackend",
    "SearchHit",
    "SearchResource",
]


class SearchResource(ConfigurableResource):
    """The search engine of an environment: `opensearch` over HTTP(S) or local `tantivy`."""

    backend: Literal["opensearch", "tantivy"] = Field(
        default="tantivy", description="Which engine serves search in this environment."
    )
    url: str | None = Field(
        default=None,
        description="OpenSearch endpoint URL, e.g. https://search-shop.eu-west-1.es.amazonaws.com.",
    )
    sigv4: bool = Field(
        default=False, description="Sign requests with SigV4 (Amazon OpenSearch Service)."
    )
    sigv4_service: Literal["es", "aoss"] = Field(
        default="es", description="`es` for managed domains, `aoss` for OpenSearch Serverless."
    )
    username: str | None = Field(default=None, description="Basic-auth user (self-managed only).")
    password: str | None = Field(default=None, description="Basic-auth password (never logged).")
    verify_certs: bool = Field(default=True, description="Verify the cluster's TLS certificate.")
    timeout_seconds: float = Field(default=30.0, description="Per-request timeout.")
    local_dir: str = Field(
        default=".lifecycle/search", description="Directory of the tantivy indices (local only)."
    )
    aws: AwsResource = Field(
        default_factory=AwsResource, description="AWS settings used for SigV4 signing."
    )

    _backend: SearchBackend | None = PrivateAttr(default=None)

    def get_backend(self) -> SearchBackend:
        """The configured backend (built once per resource instance)."""
        if self._backend is None:
            if self.backend == "tantivy":
                from lifecycle_pipelines.resources.search.tantivy_backend import TantivyBackend

                self._backend = TantivyBackend(Path(self.local_dir))
            else:
                from lifecycle_pipelines.resources.search.opensearch import OpenSearchBackend

                if not self.url:
                    raise ValueError("url: the opensearch backend needs an endpoint URL")
                credentials = None
                region = None
                if self.sigv4:
                    session = self.aws.session()
                    credentials = session.get_credentials()
                    region = self.aws.resolved_region()
                self._backend = OpenSearchBackend.connect(
                    self.url,
                    sigv4_region=region,
                    sigv4_service=self.sigv4_service,
                    username=self.username,
                    password=self.password,
                    verify_certs=self.verify_certs,
                    timeout_seconds=self.timeout_seconds,
                    credentials=credentials,
                )
        return self._backend

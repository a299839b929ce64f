"""The AWS settings every AWS-backed resource shares, in one base class.

Endpoints, region and credentials follow boto3's own resolution (environment variables such as
`AWS_ENDPOINT_URL` and `AWS_REGION`, profiles, instance roles) unless a field overrides them, so
the local moto server and a real account are reached by exactly the same code.
"""

from __future__ import annotations

import hashlib
import os
import threading
from typing import Any

import boto3
from botocore.config import Config
from dagster_aws.utils import ResourceWithBoto3Configuration
from pydantic import Field, PrivateAttr

# boto3 sessions shared by every resource with the same settings. Each session has its own
# loader, and a client built from a fresh session parses the endpoint and service models
# again (~8-15 MB of Python objects per client); a shared session parses each model once.
# Sessions are not thread-safe, so clients and service resources are built under the lock.
_SESSIONS: dict[str, boto3.session.Session] = {}
SESSION_LOCK = threading.Lock()
_SESSION_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


class AwsResource(ResourceWithBoto3Configuration):
    """Base for resources that talk to AWS: builds sessions and clients with retries."""

    connect_timeout_seconds: float = Field(
        default=10.0, description="Seconds to wait for a TCP connection to an AWS endpoint."
    )
    read_timeout_seconds: float = Field(
        default=60.0, description="Seconds to wait for an AWS response before retrying."
    )

    _clients: dict[str, Any] = PrivateAttr(default_factory=dict)

    def session(self) -> boto3.session.Session:
        """A boto3 session with this resource's region, profile and explicit credentials.

        Resources with the same settings (and the same AWS environment variables) share one
        session; build clients from it under `SESSION_LOCK`."""
        settings = (
            self.region_name,
            self.profile_name,
            self.aws_access_key_id,
            self.aws_secret_access_key,
            self.aws_session_token,
            *(os.environ.get(name) for name in _SESSION_ENV),
        )
        key = hashlib.sha256(repr(settings).encode()).hexdigest()  # no secret kept as a key
        with SESSION_LOCK:
            session = _SESSIONS.get(key)
            if session is None:
                session = _SESSIONS[key] = boto3.session.Session(
                    region_name=self.region_name,
                    profile_name=self.profile_name,
                    aws_access_key_id=self.aws_access_key_id,
                    aws_secret_access_key=self.aws_secret_access_key,
                    aws_session_token=self.aws_session_token,
                )
        return session

    def client(self, service: str) -> Any:
        """A boto3 client for `service` with standard-mode retries on throttling and 5xx.

        Clients are built once per resource instance and service (building one costs ~100 ms;
        boto3 clients are thread-safe).
        """
        cached = self._clients.get(service)
        if cached is None:
            cached = self._clients[service] = self._new_client(service)
        return cached

    def _new_client(self, service: str) -> Any:
        config = Config(
            retries={"max_attempts": self.max_attempts, "mode": "standard"},
            connect_timeout=self.connect_timeout_seconds,
            read_timeout=self.read_timeout_seconds,
        )
        kwargs: dict[str, Any] = {"use_ssl": self.use_ssl, "config": config}
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        if self.verify is not None:
            kwargs["verify"] = self.verify
        session = self.session()
        with SESSION_LOCK:
            return session.client(service, **kwargs)  # type: ignore[call-overload]

    def resolved_region(self) -> str:
        """The region boto3 resolves for this resource (field, environment or profile)."""
        region = self.session().region_name
        if not region:
            raise ValueError("region_name: no AWS region configured; set the field or AWS_REGION")
        return region


class SecretsManagerResource(AwsResource):
    """AWS Secrets Manager, for database credentials and other secrets."""

    def get_json(self, secret_id: str) -> dict[str, Any]:
        """The SecretString of `secret_id` parsed as a JSON object."""
        import json

        response = self.client("secretsmanager").get_secret_value(SecretId=secret_id)
        value = json.loads(response["SecretString"])
        if not isinstance(value, dict):
            raise ValueError(f"secret {secret_id!r} does not hold a JSON object")
        return value

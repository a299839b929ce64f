"""The analytics warehouse: Amazon Redshift in production, PostgreSQL locally.

Both backends speak DB-API and accept the same MERGE; only loading differs (Redshift COPYs staged
Parquet from S3 with an IAM role, PostgreSQL takes COPY FROM STDIN), and that difference stays in
the backend that has it.
"""

from __future__ import annotations

from typing import Any, Literal

from dagster import ConfigurableResource
from pydantic import Field

from lifecycle_pipelines.resources.aws import AwsResource, SecretsManagerResource
from lifecycle_pipelines.resources.postgres import PostgresResource

PSEUDONYM_KEY_MIN_BYTES = 32


class WarehouseResource(ConfigurableResource):
    """The warehouse of an environment (`redshift` or the local `postgres` stand-in)."""

    backend: Literal["redshift", "postgres"] = Field(
        default="postgres", description="Which engine holds the warehouse."
    )
    schema_name: str = Field(default="analytics", description="Schema of the star schema.")
    postgres: PostgresResource | None = Field(
        default=None, description="The PostgreSQL stand-in (backend=postgres)."
    )
    host: str | None = Field(default=None, description="Redshift endpoint host.")
    port: int = Field(default=5439, description="Redshift port.")
    database: str = Field(default="dev", description="Redshift database.")
    cluster_identifier: str | None = Field(
        default=None, description="Provisioned cluster id for IAM credentials."
    )
    workgroup_name: str | None = Field(
        default=None, description="Redshift Serverless workgroup for IAM credentials."
    )
    db_user: str | None = Field(
        default=None, description="Database user for IAM auth (GetClusterCredentials)."
    )
    copy_iam_role_arn: str | None = Field(
        default=None, description="IAM role Redshift assumes to COPY staged Parquet from S3."
    )
    pseudonym_secret_id: str | None = Field(
        default=None,
        description=(
            "Secrets Manager secret holding the HMAC key (`hmac_key_hex`) that turns user ids "
            "into pseudonymous user keys; the warehouse never receives raw user ids."
        ),
    )
    aws: AwsResource = Field(default_factory=AwsResource, description="AWS settings.")

    def pseudonym_key(self) -> bytes:
        """The HMAC key for pseudonymous user keys (read from Secrets Manager, never logged)."""
        if not self.pseudonym_secret_id:
            raise ValueError("pseudonym_secret_id: the warehouse needs its pseudonym key secret")
        secrets = SecretsManagerResource(**self.aws.model_dump())
        value = secrets.get_json(self.pseudonym_secret_id).get("hmac_key_hex")
        try:
            key = bytes.fromhex(value) if isinstance(value, str) else b""
        except ValueError:
            key = b""
        if len(key) < PSEUDONYM_KEY_MIN_BYTES:
            # An empty or short key would make user keys guessable by hashing every user id.
            raise ValueError(
                f"pseudonym_secret_id: the secret's hmac_key_hex must be at least "
                f"{PSEUDONYM_KEY_MIN_BYTES} bytes of hex"
            )
        return key

    def connect(self) -> Any:
        """A new DB-API connection (autocommit off) to the warehouse; the caller closes it."""
        if self.backend == "postgres":
            if self.postgres is None:
                raise ValueError("postgres: the postgres warehouse backend needs its database")
            return self.postgres.connect()
        return self.redshift_connect()

    def redshift_connect(self) -> Any:
        """Connect to Redshift with IAM authentication and TLS."""
        import redshift_connector

        if not self.host:
            raise ValueError("host: the redshift backend needs the cluster endpoint host")
        session = self.aws.session()
        credentials = session.get_credentials()
        if credentials is None:
            raise ValueError("aws: no AWS credentials for Redshift IAM authentication")
        frozen = credentials.get_frozen_credentials()
        kwargs: dict[str, Any] = {
            "iam": True,
            "host": self.host,
            "port": self.port,
            "database": self.database,
            "region": self.aws.resolved_region(),
            "access_key_id": frozen.access_key,
            "secret_access_key": frozen.secret_key,
            "session_token": frozen.token,
            "ssl": True,
        }
        if self.workgroup_name:
            kwargs["serverless_work_group"] = self.workgroup_name
            kwargs["is_serverless"] = True
        else:
            kwargs["cluster_identifier"] = self.cluster_identifier
            kwargs["db_user"] = self.db_user
        return redshift_connector.connect(**kwargs)

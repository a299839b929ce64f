"""Environment binding: local resources reach the stack; production builds offline."""

from __future__ import annotations

import dagster as dg
import pytest

from lifecycle_pipelines.environments import current_environment, resources_for
from lifecycle_pipelines.resources.search.opensearch import OpenSearchBackend

PRODUCTION_ENV = {
    "AWS_REGION": "eu-west-1",
    "AWS_DEFAULT_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEEXAMPLE00",
    "AWS_SECRET_ACCESS_KEY": "example-secret-key",
    "LIFECYCLE_DB_HOST": "shop.cluster-abc.eu-west-1.rds.amazonaws.com",
    "LIFECYCLE_DB_PORT": "5432",
    "LIFECYCLE_DB_USER": "lifecycle_pipelines",
    "LIFECYCLE_RDS_CA_BUNDLE": "/etc/ssl/rds/global-bundle.pem",
    "LIFECYCLE_BUCKET_PREFIX": "shop-production",
    "LIFECYCLE_KMS_KEY_ID": "arn:aws:kms:eu-west-1:123456789012:key/abcd",
    "LIFECYCLE_ALERTS_TOPIC_ARN": "arn:aws:sns:eu-west-1:123456789012:lifecycle-alerts",
    "LIFECYCLE_DYNAMODB_TABLE_SUFFIX": "-production",
    "OPENSEARCH_URL": "https://search-shop.eu-west-1.es.amazonaws.com",
    "REDSHIFT_HOST": "analytics.abc.eu-west-1.redshift.amazonaws.com",
    "REDSHIFT_DATABASE": "analytics",
    "REDSHIFT_CLUSTER_ID": "analytics",
    "REDSHIFT_DB_USER": "lifecycle_pipelines",
    "REDSHIFT_COPY_ROLE_ARN": "arn:aws:iam::123456789012:role/redshift-copy",
    "LIFECYCLE_PSEUDONYM_SECRET_ID": "shop/production/pseudonym-key",
}


def test_production_resources_build_from_environment_offline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in PRODUCTION_ENV.items():
        monkeypatch.setenv(key, value)
    # No network: RDS IAM tokens are presigned locally; clients connect lazily.
    with dg.build_resources(resources_for("production")) as resources:
        kwargs = resources.shop_db.connection_kwargs()
        assert kwargs["sslmode"] == "verify-full"
        assert kwargs["sslrootcert"] == "/etc/ssl/rds/global-bundle.pem"
        assert kwargs["host"] == PRODUCTION_ENV["LIFECYCLE_DB_HOST"]
        assert "X-Amz-Signature=" in kwargs["password"] and "Action=connect" in kwargs["password"]
        assert "password" not in resources.shop_db.describe()
        assert resources.s3.bucket("archive") == "shop-production-archive"
        assert resources.s3.encryption_args() == {
            "ServerSideEncryption": "aws:kms",
            "SSEKMSKeyId": PRODUCTION_ENV["LIFECYCLE_KMS_KEY_ID"],
        }
        assert resources.dynamodb.table_name("Sessions") == "Sessions-production"
        backend = resources.search.get_backend()
        assert isinstance(backend, OpenSearchBackend)
        connection = backend.client.transport.get_connection()
        assert type(connection.session.auth).__name__ == "AWSV4SignerAuth"
        assert resources.warehouse.backend == "redshift"
        assert resources.warehouse.copy_iam_role_arn == PRODUCTION_ENV["REDSHIFT_COPY_ROLE_ARN"]


def test_unknown_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIFECYCLE_ENV", "prod")
    with pytest.raises(ValueError, match="LIFECYCLE_ENV"):
        current_environment()
    with pytest.raises(ValueError, match="LIFECYCLE_ENV"):
        resources_for("qa")


def test_local_resources_reach_the_stack(stack_info: object) -> None:
    with dg.build_resources(resources_for("local")) as resources:
        with resources.shop_db.connection() as conn:
            assert conn.execute("SELECT count(*) > 0 FROM orders").fetchone() == (True,)
        with resources.control_db.connection() as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("lifecycle",)
        warehouse = resources.warehouse.connect()
        try:
            assert warehouse.execute("SELECT current_database()").fetchone() == ("warehouse",)
        finally:
            warehouse.close()
        assert resources.search.get_backend().ping()
        assert resources.alerts.notify("test alert", "storage_layout_audit failed") is not None

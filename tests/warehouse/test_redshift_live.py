"""Opt-in: the hourly load against a real Amazon Redshift (skipped unless REDSHIFT_DSN is set).

    REDSHIFT_DSN=redshift://USER:PASSWORD@HOST:5439/DATABASE \\
    REDSHIFT_COPY_ROLE_ARN=arn:aws:iam::ACCOUNT:role/ROLE \\
    REDSHIFT_STAGING_BUCKET_PREFIX=PREFIX \\
    AWS_REGION=... (and AWS credentials or AWS_PROFILE) \\
    .venv/bin/python -m pytest -m live tests/warehouse/test_redshift_live.py

The rows come from the embedded test shop; the Parquet is staged in the real bucket
`PREFIX-staging` (it must exist in the cluster's region and be readable by the role) under
`live-tests/<schema>/`, and the load goes into a schema of its own. Both are removed afterwards.
The variables are read at import: the test session isolates the environment from AWS_* and
REDSHIFT_* settings before its fixtures run.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from datetime import UTC, timedelta
from typing import Any
from urllib.parse import unquote, urlparse

import psycopg
import pytest

from lifecycle_pipelines.resources import S3Resource
from lifecycle_pipelines.warehouse import sql
from lifecycle_pipelines.warehouse.loader import HourLoader
from lifecycle_pipelines.warehouse.quality import check_hour
from lifecycle_pipelines.warehouse.staging import STAGING_BUCKET_SUFFIX

LIVE = {k: v for k, v in os.environ.items() if k.startswith(("REDSHIFT_", "AWS_"))}
REQUIRED = ("REDSHIFT_COPY_ROLE_ARN", "REDSHIFT_STAGING_BUCKET_PREFIX")

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif("REDSHIFT_DSN" not in LIVE, reason="opt-in: set REDSHIFT_DSN"),
]


def _redshift(dsn: str) -> Any:
    import redshift_connector

    url = urlparse(dsn)
    if url.scheme not in ("redshift", "postgresql", "postgres") or not url.hostname:
        raise ValueError("REDSHIFT_DSN: expected redshift://USER:PASSWORD@HOST:PORT/DATABASE")
    return redshift_connector.connect(
        host=url.hostname,
        port=url.port or 5439,
        database=url.path.lstrip("/") or "dev",
        user=unquote(url.username or ""),
        password=unquote(url.password or ""),
        ssl=True,
    )


@pytest.fixture
def live_s3() -> S3Resource:
    missing = [name for name in REQUIRED if not LIVE.get(name)]
    if missing:
        pytest.fail(f"REDSHIFT_DSN is set but {missing} are not", pytrace=False)
    return S3Resource(
        bucket_prefix=LIVE["REDSHIFT_STAGING_BUCKET_PREFIX"],
        region_name=LIVE.get("AWS_REGION") or LIVE.get("AWS_DEFAULT_REGION"),
        profile_name=LIVE.get("AWS_PROFILE"),
        aws_access_key_id=LIVE.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=LIVE.get("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=LIVE.get("AWS_SESSION_TOKEN"),
    )


@pytest.fixture
def shop(local_stack: Any) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(local_stack[0].app_conninfo(), autocommit=True) as conn:
        yield conn


def _figures(cur: Any, schema: str) -> tuple[Any, ...]:
    cur.execute(
        f"SELECT count(*), sum(order_id), sum(total), count(user_key) "
        f"FROM {sql.ident(schema, 'fact_orders')}"
    )
    return tuple(cur.fetchone())


def test_live_hour_loads_merges_reconciles_and_reruns_idempotently(
    shop: Any, live_s3: S3Resource
) -> None:
    hour = (
        shop.execute(
            "SELECT date_trunc('hour', updated_at) FROM orders GROUP BY 1 ORDER BY count(*) DESC,"
            " 1 LIMIT 1"
        )
        .fetchone()[0]
        .astimezone(UTC)
    )
    source = shop.execute(
        "SELECT count(*), sum(order_id), sum(total) FROM orders"
        " WHERE updated_at >= %s AND updated_at < %s",
        (hour, hour + timedelta(hours=1)),
    ).fetchone()
    schema = f"lifecycle_live_{secrets.token_hex(4)}"
    prefix = f"live-tests/{schema}"
    conn = _redshift(LIVE["REDSHIFT_DSN"])
    try:
        loader = HourLoader(
            shop=shop, warehouse=conn, engine="redshift", schema=schema, s3=live_s3,
            pseudonym_key=secrets.token_bytes(32),
            copy_iam_role_arn=LIVE["REDSHIFT_COPY_ROLE_ARN"], object_prefix=prefix,
        )  # fmt: skip
        first = loader.run(hour)
        outcome = check_hour(first)
        assert outcome.success and outcome.evaluated > 0, outcome.failures
        with conn.cursor() as cur:
            loaded = _figures(cur, schema)
        assert loaded[:3] == tuple(source) and loaded[3] > 0
        assert all(t.uri.startswith(f"s3://{live_s3.bucket(STAGING_BUCKET_SUFFIX)}/{prefix}/")
                   for t in first.tables)  # fmt: skip

        again = loader.run(hour)
        assert check_hour(again).success
        with conn.cursor() as cur:
            assert _figures(cur, schema) == loaded
    finally:
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute(f"DROP SCHEMA IF EXISTS {sql.ident(schema)} CASCADE")
        conn.commit()
        conn.close()
        client = live_s3.client("s3")
        bucket = live_s3.bucket(STAGING_BUCKET_SUFFIX)
        listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/").get("Contents", [])
        for item in listed:
            client.delete_object(Bucket=bucket, Key=item["Key"])

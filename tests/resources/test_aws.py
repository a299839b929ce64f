"""Unit tests of the shared AWS base resource: one boto3 session per set of settings."""

from __future__ import annotations

import pytest

from lifecycle_pipelines.resources.aws import AwsResource
from lifecycle_pipelines.resources.s3 import S3Resource


def test_resources_with_the_same_settings_share_one_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    first = AwsResource(aws_access_key_id="AKIAFIRST", aws_secret_access_key="secret-1")
    second = S3Resource(aws_access_key_id="AKIAFIRST", aws_secret_access_key="secret-1")
    assert first.session() is second.session()
    # clients are built from the shared session, with its settings
    assert first.client("s3").meta.region_name == "eu-west-1"


def test_different_credentials_or_environment_get_their_own_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    base = AwsResource(aws_access_key_id="AKIAFIRST", aws_secret_access_key="secret-1")
    other_key = AwsResource(aws_access_key_id="AKIAFIRST", aws_secret_access_key="secret-2")
    assert base.session() is not other_key.session()
    session = base.session()
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-2")
    moved = base.session()
    assert moved is not session
    assert moved.region_name == "us-east-2"

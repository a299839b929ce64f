"""Unit tests of the warehouse resource's pseudonym key (Secrets Manager, in-process moto)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from lifecycle_pipelines.resources.aws import AwsResource
from lifecycle_pipelines.resources.warehouse import WarehouseResource


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    with mock_aws():
        yield boto3.client(
            "secretsmanager",
            region_name="eu-west-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )


def _warehouse(secrets: object, value: object) -> WarehouseResource:
    secrets.create_secret(Name="pseudonym", SecretString=json.dumps(value))  # type: ignore[attr-defined]
    aws = AwsResource(aws_access_key_id="testing", aws_secret_access_key="testing")
    return WarehouseResource(pseudonym_secret_id="pseudonym", aws=aws)


def test_a_32_byte_key_is_returned(secrets: object) -> None:
    key = bytes(range(32))
    assert _warehouse(secrets, {"hmac_key_hex": key.hex()}).pseudonym_key() == key


@pytest.mark.parametrize(
    "value",
    [{"hmac_key_hex": ""}, {"hmac_key_hex": "ab" * 16}, {"hmac_key_hex": "zz" * 32}, {}],
)
def test_an_empty_short_or_malformed_key_is_refused_naming_the_field(
    secrets: object, value: object
) -> None:
    with pytest.raises(ValueError, match=r"^pseudonym_secret_id: .*hmac_key_hex .*32 bytes"):
        _warehouse(secrets, value).pseudonym_key()

"""Fixtures shared by the warehouse tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest

from lifecycle_pipelines.environments import resources_for


@pytest.fixture(scope="module")
def services(local_stack: Any) -> Iterator[tuple[Any, bytes]]:
    """The local S3 resource and the pseudonym key."""
    local = resources_for("local")
    with dg.build_resources({"s3": local["s3"], "warehouse": local["warehouse"]}) as r:
        yield r.s3, r.warehouse.pseudonym_key()

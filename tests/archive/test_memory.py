"""Unit tests of the archive's memory hand-back between months."""

from __future__ import annotations

import pyarrow as pa
import pytest

from lifecycle_pipelines.archive.memory import use_returning_arrow_pool


def test_arrow_allocates_from_a_pool_that_returns_memory() -> None:
    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        pytest.skip("this pyarrow is built without jemalloc")  # the default pool is kept
    before = pa.default_memory_pool()
    try:
        use_returning_arrow_pool()
        assert pa.default_memory_pool().backend_name == "jemalloc"
    finally:
        pa.set_memory_pool(before)

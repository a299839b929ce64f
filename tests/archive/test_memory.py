"""Unit tests of Arrow's pool choices: the archive's memory hand-back between months, the\nwarehouse load's malloc pool."""

from __future__ import annotations

import pyarrow as pa
import pytest

from lifecycle_pipelines.archive.memory import system_arrow_pool, use_returning_arrow_pool


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


def test_the_system_pool_holds_for_the_block_and_the_previous_default_returns_even_on_error() -> (
    None
):
    before = pa.default_memory_pool().backend_name
    assert before != "system"  # pyarrow's wheels default to mimalloc or jemalloc
    with pytest.raises(KeyError), system_arrow_pool():
        assert pa.default_memory_pool().backend_name == "system"
        kept = pa.array(range(1000))  # allocated from malloc, freed after the switch back
        raise KeyError("stop")
    assert pa.default_memory_pool().backend_name == before
    assert kept.sum().as_py() == 499500


def test_overlapping_blocks_share_the_switch_and_the_last_one_restores_the_default() -> None:
    before = pa.default_memory_pool().backend_name
    first, second = system_arrow_pool(), system_arrow_pool()
    first.__enter__()
    second.__enter__()  # as two loads on two threads
    first.__exit__(None, None, None)
    assert pa.default_memory_pool().backend_name == "system"  # the second still runs
    second.__exit__(None, None, None)
    assert pa.default_memory_pool().backend_name == before

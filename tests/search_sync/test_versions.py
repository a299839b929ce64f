"""Compact (id, version) sets: differences and checksums."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np

from lifecycle_pipelines.search_sync.sync import reconcile
from lifecycle_pipelines.search_sync.versions import VersionSet, version_code, version_hash


def test_reconcile_finds_missing_extra_and_stale_documents() -> None:
    source = VersionSet.from_pairs([("3", "v3"), ("1", "v1"), ("2", "v2")])
    index = VersionSet.from_pairs([("1", "v1"), ("2", "old"), ("9", "v9")])
    result = reconcile(source, index)
    assert (result.missing, result.extra, result.stale) == (["3"], ["9"], ["2"])
    assert not result.matches
    same = reconcile(source, VersionSet.from_pairs([("2", "v2"), ("3", "v3"), ("1", "v1")]))
    assert same.matches and same.source_checksum == same.index_checksum


def test_a_changed_version_changes_the_checksum_and_removal_works() -> None:
    a = VersionSet.from_pairs([("1", "x"), ("2", "y")])
    b = VersionSet.from_pairs([("1", "x"), ("2", "z")])
    assert a.checksum != b.checksum
    assert list(a.without(["2"]).ids) == [1]


def test_one_instant_has_one_code_however_it_is_written() -> None:
    stamp = datetime(2026, 11, 24, 23, 0, 0, 123456, tzinfo=UTC)
    micros = 1_795_561_200_123_456
    assert version_code(stamp) == micros
    assert version_code("2026-11-24T23:00:00.123456Z") == micros
    assert version_code("2026-11-25T00:00:00.123456+01:00") == micros
    assert version_code(stamp.astimezone(timezone(timedelta(hours=-5)))) == micros
    assert version_code("2026-11-24T23:00:00.123457Z") == micros + 1
    assert version_code("v1") != version_code("v2") and version_code("v1") >= 1 << 62
    # the source side (ids and microseconds from PostgreSQL) and the index side (ISO text)
    # give the same set
    from_text = VersionSet.from_pairs([("7", "2026-11-24T23:00:00.123456Z"), ("3", stamp)])
    from_numbers = VersionSet.from_arrays(np.array([3, 7]), np.array([micros, micros]))
    assert from_text.checksum == from_numbers.checksum
    assert from_text.ids.tolist() == [3, 7]
    assert version_hash("7", stamp) == int(from_numbers.hashes[1]) < 1 << 40

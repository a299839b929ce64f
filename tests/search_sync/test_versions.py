"""Compact (id, version) sets: differences and checksums."""

from __future__ import annotations

from lifecycle_pipelines.search_sync.sync import reconcile
from lifecycle_pipelines.search_sync.versions import VersionSet


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

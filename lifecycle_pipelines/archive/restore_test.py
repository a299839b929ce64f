"""Quarterly sample restore tests (spec 8.2: "Archive Verification: quarterly sample restore
tests").

1. `start_restore_test` samples archived objects, records the test and asks S3 to restore them.
2. `restore_progress` tells how many are readable (a sensor polls it; Glacier takes hours).
3. `verify_restore_test` downloads every restored object and checks it against the manifest:
   SHA-256 of the downloaded bytes, then the object's GX suite with the manifest's figures
   (rows, key sum, key checksum, money sums) as the reconciliation parameters.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
import pyarrow.parquet as pq

from lifecycle_pipelines.archive import manifest
from lifecycle_pipelines.archive.columns import TableShape
from lifecycle_pipelines.archive.plan import ArchiveMonth
from lifecycle_pipelines.archive.reader import download, readability, request_restore
from lifecycle_pipelines.archive.stats import ReconStats
from lifecycle_pipelines.archive.verify import gx_parameters, rows_frame
from lifecycle_pipelines.checks.gx import CheckOutcome, load_suite, schema_frame, validate

_OBJECT_COLUMNS = (
    "o.object_id, o.table_name, o.part, o.bucket, o.object_key, o.version_id, o.storage_class,"
    " o.row_count, o.size_bytes, o.sha256, o.pk_min, o.pk_max, o.pk_sum, o.pk_hash_sum,"
    " o.money_sums, o.state, o.data_type, o.partition_month"
)


@dataclass
class SampledObject:
    """A sampled object and the partition it belongs to."""

    entry: manifest.ObjectEntry
    data_type: str
    month: ArchiveMonth


@dataclass
class RestoreTestOutcome:
    """The result of one restore test."""

    test_id: int
    objects: int = 0
    passed_objects: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.objects > 0 and self.passed_objects == self.objects


def _sampled(row: tuple[Any, ...]) -> SampledObject:
    entry = manifest.ObjectEntry(
        table_name=row[1], part=row[2], bucket=row[3], object_key=row[4], version_id=row[5],
        storage_class=row[6], row_count=row[7], size_bytes=row[8], sha256=row[9], pk_min=row[10],
        pk_max=row[11], pk_sum=int(row[12]), pk_hash_sum=int(row[13]), money_sums=row[14],
        subjects={}, state=row[15], object_id=row[0],
    )  # fmt: skip
    return SampledObject(entry, row[16], ArchiveMonth(row[16], row[17]))


def open_test(conn: psycopg.Connection[Any]) -> int | None:
    """The id of the oldest test still waiting for its restores, if any."""
    row = conn.execute(
        "SELECT test_id FROM lifecycle.restore_tests WHERE state = 'requested'"
        " ORDER BY test_id LIMIT 1"
    ).fetchone()
    return None if row is None else int(row[0])


def test_objects(conn: psycopg.Connection[Any], test_id: int) -> list[SampledObject]:
    rows = conn.execute(
        f"SELECT {_OBJECT_COLUMNS} FROM lifecycle.restore_test_objects t"
        " JOIN lifecycle.archive_objects o USING (object_id) WHERE t.test_id = %s"
        " ORDER BY o.object_id",
        (test_id,),
    ).fetchall()
    return [_sampled(r) for r in rows]


RESTORE_TIERS = ("Expedited", "Standard", "Bulk")


def start_restore_test(
    conn: psycopg.Connection[Any], s3_client: Any, *, sample_size: int, days: int, tier: str
) -> tuple[int | None, list[SampledObject], bool]:
    """Start a test (or return the open one): (test id, its objects, started now).

    Every object of the test that is not readable gets a restore request, also when the open
    test is returned: a request that failed or a restored copy that expired before the test
    was verified is asked for again, so an open test never waits for nothing. The settings are
    checked before anything is recorded."""
    if tier not in RESTORE_TIERS:
        raise ValueError(f"tier: expected one of {RESTORE_TIERS}, got {tier!r}")
    if days < 1:
        raise ValueError(f"restore_days: a restored copy must live at least 1 day, got {days}")
    if sample_size < 1:
        raise ValueError(f"sample_size: must be at least 1, got {sample_size}")
    current = open_test(conn)
    if current is not None:
        sample = test_objects(conn, current)
        _request_unreadable(s3_client, sample, days, tier)
        return current, sample, False
    rows = conn.execute(
        f"SELECT {_OBJECT_COLUMNS} FROM lifecycle.archive_objects o"
        " WHERE o.state IN ('verified', 'purged') ORDER BY random() LIMIT %s",
        (sample_size,),
    ).fetchall()
    if not rows:
        return None, [], False
    sample = [_sampled(r) for r in rows]
    with conn.transaction():
        test = conn.execute(
            "INSERT INTO lifecycle.restore_tests (state) VALUES ('requested') RETURNING test_id"
        ).fetchone()
        assert test is not None
        for item in sample:
            conn.execute(
                "INSERT INTO lifecycle.restore_test_objects (test_id, object_id) VALUES (%s, %s)",
                (test[0], item.entry.object_id),
            )
    _request_unreadable(s3_client, sample, days, tier)
    return int(test[0]), sample, True


def _request_unreadable(s3_client: Any, sample: list[SampledObject], days: int, tier: str) -> None:
    for item in sample:
        if not readability(s3_client, item.entry).readable:
            request_restore(s3_client, item.entry, days, tier)


def restore_progress(
    conn: psycopg.Connection[Any], s3_client: Any, test_id: int
) -> tuple[int, int]:
    """(objects readable now, objects in the test)."""
    objects = test_objects(conn, test_id)
    readable = sum(1 for item in objects if readability(s3_client, item.entry).readable)
    return readable, len(objects)


def _manifest_stats(entry: manifest.ObjectEntry) -> ReconStats:
    sums = entry.money_sums if isinstance(entry.money_sums, dict) else json.loads(entry.money_sums)
    return ReconStats(
        rows=entry.row_count,
        pk_sum=entry.pk_sum,
        pk_hash_sum=entry.pk_hash_sum,
        money_cents={name: int(Decimal(text) * 100) for name, text in sums.items()},
    )


def verify_restore_test(
    conn: psycopg.Connection[Any],
    s3_client: Any,
    test_id: int,
    shapes: dict[tuple[str, str], TableShape],
) -> RestoreTestOutcome:
    """Check every restored object of the test against the manifest; records the outcome."""
    outcome = RestoreTestOutcome(test_id)
    for item in test_objects(conn, test_id):
        entry = item.entry
        outcome.objects += 1
        label = f"s3://{entry.bucket}/{entry.object_key}"
        problems: list[str] = []
        data = download(s3_client, entry)
        digest = base64.b64encode(hashlib.sha256(data).digest()).decode()
        if digest != entry.sha256:
            problems.append("SHA-256 of the restored bytes differs from the manifest")
        else:
            parquet = pq.ParquetFile(io.BytesIO(data))
            shape = shapes[(item.data_type, entry.table_name)]
            checks = validate(
                load_suite(f"archive_{item.data_type}.{entry.table_name}"),
                {
                    "schema": schema_frame(parquet.schema_arrow),
                    "rows": rows_frame(parquet.read(), shape),
                },
                gx_parameters(_manifest_stats(entry), item.month),
            )
            for check in checks.values():
                if not check.success:
                    problems.extend(check.failures)
        passed = not problems
        outcome.passed_objects += int(passed)
        if problems:
            outcome.failures.append(f"{label}: " + "; ".join(problems))
        conn.execute(
            "UPDATE lifecycle.restore_test_objects SET restored = true, passed = %s, detail = %s"
            " WHERE test_id = %s AND object_id = %s",
            (passed, "; ".join(problems) or "matches the manifest", test_id, entry.object_id),
        )
    conn.execute(
        "UPDATE lifecycle.restore_tests SET state = %s, finished_at = now(), summary = %s"
        " WHERE test_id = %s",
        (
            "passed" if outcome.passed else "failed",
            json.dumps({"objects": outcome.objects, "passed": outcome.passed_objects}),
            test_id,
        ),
    )
    return outcome


def summary_check(outcome: RestoreTestOutcome) -> CheckOutcome:
    """The restore test as a check outcome (for asset-check metadata)."""
    check = CheckOutcome("restore", success=outcome.passed, evaluated=outcome.objects)
    check.failures = list(outcome.failures)
    return check

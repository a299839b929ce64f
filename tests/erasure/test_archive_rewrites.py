"""Archive rewrites after an erasure wait for an open restore test of the same object."""

from __future__ import annotations

import io
from typing import Any

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq

from lifecycle_pipelines.archive.eraser import record_rewrite_plan, rewrite_pending
from lifecycle_pipelines.archive.restore_test import restore_progress
from tests.erasure.conftest import erasure_resources

BUCKET = "erasure-tests-restore-and-rewrite"


def _glacier_object(client: Any) -> str:
    client.create_bucket(
        Bucket=BUCKET,
        CreateBucketConfiguration={"LocationConstraint": client.meta.region_name},
    )
    client.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    table = pa.table(
        {
            "order_id": pa.array([1, 2], pa.int64()),
            "user_id": pa.array([7, 8], pa.int64()),
            "_personal": pa.array([b"x", b"y"]),
        }
    ).replace_schema_metadata({b"lifecycle.subject_column": b"user_id"})
    body = io.BytesIO()
    pq.write_table(table, body)
    response = client.put_object(
        Bucket=BUCKET, Key="orders.parquet", Body=body.getvalue(), StorageClass="GLACIER"
    )
    return str(response["VersionId"])


def test_a_rewrite_waits_until_the_restore_test_has_checked_the_object(control: Any) -> None:
    with dg.build_resources({"s3": erasure_resources()["s3"]}) as resources:
        s3 = resources.s3
        client = s3.client("s3")
        version = _glacier_object(client)
        control.execute(
            "INSERT INTO lifecycle.archive_partitions (data_type, partition_month, state,"
            " snapshot_at, source_rows) VALUES ('rewrite_test', '2020-01-01', 'purged', now(), 2)"
        )
        object_id = control.execute(
            "INSERT INTO lifecycle.archive_objects (data_type, partition_month, table_name,"
            " part, bucket, object_key, version_id, storage_class, row_count, size_bytes,"
            " sha256, pk_sum, pk_hash_sum, state) VALUES ('rewrite_test', '2020-01-01',"
            " 'orders', 0, %s, 'orders.parquet', %s, 'GLACIER', 2, 1, 'x', 3, 3, 'purged')"
            " RETURNING object_id",
            (BUCKET, version),
        ).fetchone()[0]
        request_id = control.execute(
            "INSERT INTO lifecycle.erasure_requests (subject_id, requested_by, state)"
            " VALUES ('987654321', 'privacy-team', 'hard_deleted') RETURNING request_id"
        ).fetchone()[0]
        control.execute(
            "INSERT INTO lifecycle.erasure_rewrites (request_id, object_id, subject_id,"
            " decision, state) VALUES (%s, %s, '7', 'with_next_restore', 'pending')",
            (request_id, object_id),
        )
        test_id = control.execute(
            "INSERT INTO lifecycle.restore_tests (state) VALUES ('requested') RETURNING test_id"
        ).fetchone()[0]
        control.execute(
            "INSERT INTO lifecycle.restore_test_objects (test_id, object_id) VALUES (%s, %s)",
            (test_id, object_id),
        )
        client.restore_object(
            Bucket=BUCKET,
            Key="orders.parquet",
            VersionId=version,
            RestoreRequest={"Days": 2, "GlacierJobParameters": {"Tier": "Bulk"}},
        )
        assert restore_progress(control, client, test_id) == (1, 1)

        rewrite_pending(control, s3)  # the daily rewrite job, while the test is open

        assert restore_progress(control, client, test_id) == (1, 1)  # the test can finish
        state = "SELECT state FROM lifecycle.erasure_rewrites WHERE object_id = %s"
        assert control.execute(state, (object_id,)).fetchone() == ("pending",)

        control.execute(
            "UPDATE lifecycle.restore_tests SET state = 'passed', finished_at = now()"
            " WHERE test_id = %s",
            (test_id,),
        )
        try:
            rewrite_pending(control, s3)  # the next day: the restored copy is rewritten
            assert control.execute(state, (object_id,)).fetchone() == ("done",)
        finally:  # the request is this test's own: other tests replay every finished one
            control.execute(
                "DELETE FROM lifecycle.erasure_rewrites WHERE request_id = %s", (request_id,)
            )
            control.execute(
                "DELETE FROM lifecycle.erasure_requests WHERE request_id = %s", (request_id,)
            )


def test_a_pending_plan_takes_todays_decision_and_a_finished_one_is_kept(control: Any) -> None:
    """A rewrite planned `rewrite_now` that failed while the object was readable is planned
    again for its next restore once the copy expired; nothing waits for an impossible rewrite."""
    control.execute(
        "INSERT INTO lifecycle.archive_partitions (data_type, partition_month, state,"
        " snapshot_at, source_rows) VALUES ('replan_test', '2020-02-01', 'purged', now(), 2)"
    )
    objects = [
        control.execute(
            "INSERT INTO lifecycle.archive_objects (data_type, partition_month, table_name,"
            " part, bucket, object_key, version_id, storage_class, row_count, size_bytes,"
            " sha256, pk_sum, pk_hash_sum, state) VALUES ('replan_test', '2020-02-01',"
            " 'orders', %s, 'b', %s, 'v', 'GLACIER', 2, 1, 'x', 3, 3, 'purged')"
            " RETURNING object_id",
            (part, f"replan-{part}.parquet"),
        ).fetchone()[0]
        for part in (0, 1)
    ]
    request_id = control.execute(
        "INSERT INTO lifecycle.erasure_requests (subject_id, requested_by, state)"
        " VALUES ('987654322', 'privacy-team', 'soft_deleted') RETURNING request_id"
    ).fetchone()[0]
    plans = "SELECT object_id, decision, state FROM lifecycle.erasure_rewrites WHERE request_id = %s ORDER BY object_id"
    try:
        record_rewrite_plan(control, request_id, "7", dict.fromkeys(objects, "rewrite_now"))
        control.execute(  # the first object's rewrite finished, the second one's failed
            "UPDATE lifecycle.erasure_rewrites SET state = 'done' WHERE object_id = %s",
            (objects[0],),
        )
        record_rewrite_plan(control, request_id, "7", dict.fromkeys(objects, "with_next_restore"))
        assert control.execute(plans, (request_id,)).fetchall() == [
            (objects[0], "rewrite_now", "done"),
            (objects[1], "with_next_restore", "pending"),
        ]
    finally:
        control.execute(
            "DELETE FROM lifecycle.erasure_rewrites WHERE request_id = %s", (request_id,)
        )
        control.execute(
            "DELETE FROM lifecycle.erasure_requests WHERE request_id = %s", (request_id,)
        )

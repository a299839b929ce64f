"""The UI intake job, dry-run plans, 'no data found' certificates, hold validation, the ledger's
append-only rule and tamper detection of the certificate chain."""

from __future__ import annotations

import json
from typing import Any, cast

import boto3
import dagster as dg
import psycopg
import pytest

from lifecycle_pipelines.assets.erasure import erasure_request_job, erasure_soft_delete
from lifecycle_pipelines.erasure import certificate
from lifecycle_pipelines.erasure.holds import place_hold
from lifecycle_pipelines.erasure.recovery import ChainBroken, recover_certificates
from lifecycle_pipelines.erasure.requests import ErasureRequestError, status, submit
from tests.erasure.conftest import erasure_resources, run_request


def _intake(user_id: str, requested_by: str, dry_run: bool = False) -> dg.ExecuteJobResult:
    resources = erasure_resources()
    return erasure_request_job.execute_in_process(
        run_config={
            "ops": {
                "submit_erasure_request": {
                    "config": {"user_id": user_id, "requested_by": requested_by, "dry_run": dry_run}
                }
            }
        },
        resources={"control_db": resources["control_db"], "shop_db": resources["shop_db"]},
        raise_on_error=False,
    )


def test_the_intake_job_records_a_request_and_refuses_bad_input(control: Any) -> None:
    before = control.execute("SELECT count(*) FROM lifecycle.erasure_requests").fetchone()[0]
    bad = _intake("12x", "privacy@shop.example")
    assert not bad.success
    assert (
        control.execute("SELECT count(*) FROM lifecycle.erasure_requests").fetchone()[0] == before
    )
    good = _intake("7", "privacy@shop.example", dry_run=True)
    assert good.success
    request = status(control, good.output_for_node("submit_erasure_request"))
    assert request is not None and request.dry_run and request.subject_id == "7"


def test_a_dry_run_reports_the_hard_delete_plan_and_changes_nothing(
    shop: Any, control: Any
) -> None:
    subject = shop.execute(
        "SELECT user_id FROM users WHERE deleted_at IS NULL AND EXISTS (SELECT 1 FROM orders o"
        " WHERE o.user_id = users.user_id) ORDER BY user_id LIMIT 1"
    ).fetchone()[0]
    before = shop.execute("SELECT u::text FROM users u WHERE user_id = %s", (subject,)).fetchone()
    request = submit(control, shop, str(subject), "privacy@shop.example", dry_run=True)
    result = run_request(erasure_soft_delete, request.request_id)
    assert result.success
    metadata = result.asset_materializations_for_node("erasure_soft_delete")[0].metadata
    assert cast(int, metadata["hard_delete_items"].value) > 0  # at least the user row and orders
    assert "postgres.orders" in cast(str, metadata["hard_delete_plan"].value)
    assert (
        shop.execute("SELECT u::text FROM users u WHERE user_id = %s", (subject,)).fetchone()
        == before
    )
    assert certificate.get(control, request.request_id) is None


def test_an_unknown_subject_completes_with_a_no_data_found_certificate(
    shop: Any, control: Any
) -> None:
    request = submit(control, shop, "987654321", "privacy@shop.example")
    assert request.state == "no_data_found"
    result = run_request(erasure_soft_delete, request.request_id)
    assert result.success
    metadata = result.asset_materializations_for_node("erasure_soft_delete")[0].metadata
    cert = certificate.get(control, request.request_id)
    assert cert is not None and metadata["certificate_sha256"].value == cert.sha256
    assert cert.version_id is not None
    body = (
        boto3.client("s3")
        .get_object(Bucket=cert.bucket, Key=cert.object_key, VersionId=cert.version_id)["Body"]
        .read()
    )
    document = json.loads(body)
    assert document["outcome"] == "no data found"
    assert all(v["remaining"] == 0 for v in document["verification"])
    assert "987654321" not in body.decode()  # the subject is named by pseudonym only


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"user_id": "x1", "reason": "litigation"}, "user_id"),
     ({"user_id": "5", "reason": "no"}, "reason"),
     ({"s3_uri": "s3://nope/not-archived.parquet", "reason": "audit"}, "s3_uri"),
     ({"s3_uri": "ftp://x", "reason": "audit"}, "s3_uri"),
     ({"reason": "audit"}, "user_id / s3_uri")],
)  # fmt: skip
def test_a_malformed_hold_names_the_field_and_records_nothing(
    control: Any, kwargs: dict[str, str], field: str
) -> None:
    before = control.execute("SELECT count(*) FROM lifecycle.erasure_holds").fetchone()[0]
    with pytest.raises(ErasureRequestError, match=f"^{field}:"):
        place_hold(control, placed_by="legal@shop.example", **kwargs)
    assert control.execute("SELECT count(*) FROM lifecycle.erasure_holds").fetchone()[0] == before


def test_the_ledger_is_append_only(control: Any) -> None:
    with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
        control.execute("DELETE FROM lifecycle.erasure_ledger")


def test_a_tampered_certificate_breaks_the_chain(control: Any, shop: Any) -> None:
    request = submit(control, shop, "987654322", "privacy@shop.example")
    assert run_request(erasure_soft_delete, request.request_id).success
    cert = certificate.get(control, request.request_id)
    assert cert is not None
    with dg.build_resources({"s3": erasure_resources()["s3"]}) as resources:
        assert certificate.verify_chain(control, resources.s3) == []
        forged = resources.s3.put_bytes(
            cert.bucket, cert.object_key, b'{"outcome": "erased"}',
            extra={"ChecksumAlgorithm": "SHA256"},
        )  # fmt: skip
        control.execute(
            "UPDATE lifecycle.erasure_certificates SET version_id = %s WHERE sequence = %s",
            (forged["VersionId"], cert.sequence),
        )
        problems = certificate.verify_chain(control, resources.s3)
        control.execute(
            "UPDATE lifecycle.erasure_certificates SET version_id = %s WHERE sequence = %s",
            (cert.version_id, cert.sequence),
        )
    assert any(f"certificate {cert.sequence}" in p for p in problems)


def test_a_hard_deleted_request_without_a_certificate_is_a_problem_of_the_chain(
    control: Any,
) -> None:
    request_id = control.execute(
        "INSERT INTO lifecycle.erasure_requests (subject_id, requested_by, state)"
        " VALUES ('987654324', 'privacy-team', 'hard_deleted') RETURNING request_id"
    ).fetchone()[0]
    try:
        with dg.build_resources({"s3": erasure_resources()["s3"]}) as resources:
            problems = certificate.verify_chain(control, resources.s3)
    finally:  # this test's own request: other tests replay every finished one
        control.execute(
            "DELETE FROM lifecycle.erasure_requests WHERE request_id = %s", (request_id,)
        )
    assert f"request {request_id}: hard-deleted but without a certificate" in problems


def test_a_certificate_that_does_not_continue_the_chain_is_not_recovered(control: Any) -> None:
    """Under a prefix of its own (another installation id, rolled back afterwards), S3 holds a
    certificate after the database's last whose link is wrong: recovery refuses it, names it,
    and records nothing."""
    with (
        dg.build_resources({"s3": erasure_resources()["s3"]}) as resources,
        control.transaction(force_rollback=True),
    ):
        control.execute("UPDATE lifecycle.installation SET installation_id = gen_random_uuid()")
        last = control.execute(
            "SELECT coalesce(max(sequence), 0) FROM lifecycle.erasure_certificates"
        ).fetchone()[0]
        key = certificate.certificate_key(certificate.chain_prefix(control), last + 1, 424242)
        forged = {"sequence": last + 1, "request_id": 424242, "previous_sha256": "0" * 64}
        resources.s3.put_bytes(
            resources.s3.bucket("archive"), key, json.dumps(forged).encode(),
            extra={"ChecksumAlgorithm": "SHA256"},
        )  # fmt: skip
        before = control.execute("SELECT count(*) FROM lifecycle.erasure_requests").fetchone()
        with pytest.raises(ChainBroken, match=f"{key}: does not continue the chain"):
            recover_certificates(
                control, resources.s3, known_subjects=list, pseudonym_key=b"k" * 32
            )
        after = control.execute("SELECT count(*) FROM lifecycle.erasure_requests").fetchone()
        assert after == before
        assert any(key in p for p in certificate.verify_chain(control, resources.s3))

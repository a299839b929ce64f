"""The UI intake job, dry-run plans, 'no data found' certificates, hold validation, the ledger's
append-only rule and tamper detection of the certificate chain."""

from __future__ import annotations

import hashlib
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
from tests.erasure.conftest import CONTROL, erasure_resources, run_request


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


def test_a_certificate_stored_before_a_crash_is_recorded_as_it_is_by_the_re_run(
    control: Any, shop: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload succeeded, the row's commit did not; the re-run's document differs (the
    ledger grew since): the stored certificate, which links to the chain, is recorded as it
    is, and nothing is written over it."""
    request = submit(control, shop, "987654331", "privacy@shop.example")  # unknown subject
    document = certificate.certificate_document(
        control, request.request_id, subject_pseudonym="p", outcome="no data found", remaining=[]
    )

    def crash(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("connection lost")

    with dg.build_resources({"s3": erasure_resources()["s3"]}) as resources:
        monkeypatch.setattr(certificate, "_record", crash)
        with pytest.raises(RuntimeError, match="connection lost"):
            certificate.issue(control, resources.s3, request.request_id, document)
        monkeypatch.undo()
        assert certificate.get(control, request.request_id) is None
        control.execute(
            "INSERT INTO lifecycle.erasure_ledger (request_id, store, action)"
            " VALUES (%s, 'intake', 'looked up again')",
            (request.request_id,),
        )
        again = certificate.certificate_document(
            control, request.request_id, subject_pseudonym="p", outcome="no data found",
            remaining=[],
        )  # fmt: skip
        assert again != document
        other = {**again, "subject_pseudonym": "another subject"}  # the id reused after a restore
        with pytest.raises(certificate.ChainAhead):
            certificate.issue(control, resources.s3, request.request_id, other)
        recorded = certificate.issue(control, resources.s3, request.request_id, again)
        client = resources.s3.client("s3")
        stored = client.get_object(Bucket=recorded.bucket, Key=recorded.object_key)["Body"]
        assert hashlib.sha256(stored.read()).hexdigest() == recorded.sha256
        versions = client.list_object_versions(Bucket=recorded.bucket, Prefix=recorded.object_key)
        assert len(versions.get("Versions", [])) == 1
        assert certificate.verify_chain(control, resources.s3) == []


def _forget_request(local_stack: Any, request_id: int, *, dry_run_in_its_place: str | None) -> None:
    """What a control database restored from a backup taken before the request was received
    looks like: the request, its ledger and its certificate row gone (as the superuser: the
    ledger is append-only); with `dry_run_in_its_place`, a later dry run for that subject took
    its id."""
    admin = local_stack[0].postgres.start().conninfo()
    with psycopg.connect(admin, dbname=CONTROL, autocommit=True) as su:
        su.execute("SET session_replication_role = replica")
        for table in ("erasure_certificates", "erasure_ledger", "erasure_rewrites"):
            su.execute(f"DELETE FROM lifecycle.{table} WHERE request_id = %s", (request_id,))
        su.execute("DELETE FROM lifecycle.erasure_requests WHERE request_id = %s", (request_id,))
        if dry_run_in_its_place is not None:
            su.execute(
                "INSERT INTO lifecycle.erasure_requests (request_id, subject_id, requested_by,"
                " dry_run, state) OVERRIDING SYSTEM VALUE VALUES (%s, %s, 'ops', true,"
                " 'received')",
                (request_id, dry_run_in_its_place),
            )


def _recover(control: Any, known: list[str]) -> list[Any]:
    resources = erasure_resources()
    with dg.build_resources({"s3": resources["s3"], "warehouse": resources["warehouse"]}) as r:
        return recover_certificates(
            control, r.s3, known_subjects=lambda: known, pseudonym_key=r.warehouse.pseudonym_key()
        )


def test_a_lost_no_data_found_certificate_is_recovered_onto_its_own_request(
    control: Any, shop: Any
) -> None:
    request = submit(control, shop, "987654332", "privacy@shop.example")  # unknown subject
    assert run_request(erasure_soft_delete, request.request_id).success
    cert = certificate.get(control, request.request_id)
    assert cert is not None
    control.execute(  # the control database lost the row (a restore from before it)
        "DELETE FROM lifecycle.erasure_certificates WHERE request_id = %s", (request.request_id,)
    )
    recovered = _recover(control, [])
    assert [(r.sequence, r.request_id) for r in recovered] == [(cert.sequence, request.request_id)]
    assert certificate.get(control, request.request_id) == cert
    row = status(control, request.request_id)
    assert row is not None and row.state == "no_data_found"


def test_a_dry_run_that_took_a_lost_request_id_is_left_alone_by_the_recovery(
    control: Any, shop: Any, local_stack: Any
) -> None:
    request = submit(control, shop, "987654333", "privacy@shop.example")  # unknown subject
    assert run_request(erasure_soft_delete, request.request_id).success
    cert = certificate.get(control, request.request_id)
    assert cert is not None
    _forget_request(local_stack, request.request_id, dry_run_in_its_place="987654333")
    recovered = _recover(control, ["987654333"])
    assert len(recovered) == 1 and recovered[0].request_id != request.request_id
    dry = status(control, request.request_id)
    assert dry is not None and dry.dry_run and dry.state == "received"  # untouched
    real = status(control, recovered[0].request_id)
    assert real is not None and not real.dry_run and real.subject_id == "987654333"
    assert real.state == "no_data_found"
    with dg.build_resources({"s3": erasure_resources()["s3"]}) as r:
        assert certificate.verify_chain(control, r.s3) == []


def test_a_stored_certificate_is_the_same_request_whatever_time_zone_rendered_it() -> None:
    stored = {"request_id": 7, "subject_pseudonym": "p", "previous_sha256": "a",
              "received_at": "2026-11-26T10:00:00+00:00"}  # fmt: skip
    again = {**stored, "received_at": "2026-11-26T11:00:00+01:00"}  # another session TimeZone
    assert certificate._same_request(stored, again, "a")
    assert not certificate._same_request(stored, {**again, "subject_pseudonym": "q"}, "a")
    assert not certificate._same_request(stored, again, "b")

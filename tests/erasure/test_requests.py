"""Erasure request intake: validation, duplicates merged, unknown subjects, the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from lifecycle_pipelines.cli import main
from lifecycle_pipelines.control import ensure_control_schema
from lifecycle_pipelines.erasure.requests import ErasureRequestError, submit, validate


@pytest.fixture
def control(local_stack: Any) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(local_stack[0].app_conninfo("lifecycle"), autocommit=True) as conn:
        ensure_control_schema(conn)
        yield conn


def _count(control: Any) -> int:
    return int(control.execute("SELECT count(*) FROM lifecycle.erasure_requests").fetchone()[0])


@pytest.mark.parametrize(
    ("user_id", "requested_by", "field"),
    [("abc", "privacy@shop.example", "user_id"), ("-3", "privacy@shop.example", "user_id"),
     ("\u00b2", "privacy@shop.example", "user_id"), ("\u0661\u0662", "privacy@shop.example", "user_id"),
     ("jane.doe@mail.example", "privacy@shop.example", "user_id"), ("9" * 30, "privacy@shop.example", "user_id"),
     ("12", "", "requested_by"), ("12", "Robert'); DROP TABLE users;--", "requested_by"),
     ("12", "Jane Doe <jane@mail.example>", "requested_by")],
)  # fmt: skip
def test_malformed_requests_name_the_field_record_nothing_and_echo_no_value(
    control: Any, shop_conn: Any, user_id: str, requested_by: str, field: str
) -> None:
    before = _count(control)
    with pytest.raises(ErasureRequestError, match=f"^{field}:") as raised:
        submit(control, shop_conn, user_id, requested_by)
    assert _count(control) == before
    rejected = user_id if field == "user_id" else requested_by
    if rejected:
        assert rejected not in str(raised.value)  # may be personal data: never echoed


def test_duplicates_merge_and_unknown_subjects_complete(control: Any, shop_conn: Any) -> None:
    first = submit(control, shop_conn, "17", "privacy@shop.example")
    again = submit(control, shop_conn, " 017 ", "dpo@shop.example")
    assert again.request_id == first.request_id and first.state == "received"
    merged = control.execute(
        "SELECT count(*) FROM lifecycle.erasure_requests WHERE merged_into = %s",
        (first.request_id,),
    ).fetchone()[0]
    assert merged == 1
    dry = submit(control, shop_conn, "17", "privacy@shop.example", dry_run=True)
    assert dry.request_id != first.request_id and dry.dry_run
    unknown = submit(control, shop_conn, "99999999", "privacy@shop.example")
    assert unknown.state == "no_data_found"
    assert validate("0042", " dpo@shop.example ") == ("42", "dpo@shop.example")


def test_cli_submit_and_status(
    stack_dir: Path, stack_info: object, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--state-dir", str(stack_dir), "erasure"]
    assert main([*args, "submit", "--user-id", "23", "--requested-by", "dpo@shop.example"]) == 0
    line = capsys.readouterr().out.strip()
    assert "subject 23 received" in line
    request = line.split()[1].rstrip(":")
    assert main([*args, "status", request]) == 0
    assert f"request {request}: subject 23" in capsys.readouterr().out
    assert main([*args, "submit", "--user-id", "x", "--requested-by", "dpo@shop.example"]) == 2
    assert "user_id: expected a positive integer" in capsys.readouterr().err


def test_cli_holds_certificates_chain_and_replay(
    stack_dir: Path, stack_info: object, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--state-dir", str(stack_dir), "erasure"]
    hold = ["hold", "--user-id", "23", "--reason", "tax audit 2026", "--placed-by", "legal"]
    assert main([*args, *hold]) == 0
    hold_id = capsys.readouterr().out.split()[1]
    assert main([*args, "lift", hold_id, "--lifted-by", "legal"]) == 0
    assert f"hold {hold_id} lifted" in capsys.readouterr().out
    assert main([*args, "lift", hold_id, "--lifted-by", "legal"]) == 2
    assert f"no active hold {hold_id}" in capsys.readouterr().err
    assert main([*args, "hold", "--user-id", "23", "--reason", "x", "--placed-by", "legal"]) == 2
    assert capsys.readouterr().err.startswith("error: reason:")
    assert main([*args, "certificate", "999999"]) == 2
    assert "has no certificate" in capsys.readouterr().err
    assert main([*args, "verify-chain"]) == 0
    assert "0 problems" in capsys.readouterr().out
    assert main([*args, "replay"]) == 0
    assert "requests re-applied" in capsys.readouterr().out

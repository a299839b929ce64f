"""Hard delete end to end, through Dagster, on the erasure tests' own databases.

One subject is spread over every store: orders in two archived (Glacier) months, rows in the
shop, DynamoDB items, documents in two monthly activity indices and rows in the warehouse. The
tests run in file order on that shared world: grace period, legal hold, erasure, proof of no
trace (old object versions and older indices included), other subjects intact, reconciliation,
repetition, then a database restore followed by the ledger replay.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any, cast

import boto3
import dagster as dg
import psycopg
import pyarrow.parquet as pq
import pytest
from boto3.dynamodb.conditions import Key
from psycopg import sql

from lifecycle_pipelines.archive import manifest
from lifecycle_pipelines.archive.crypto import SubjectKeyring
from lifecycle_pipelines.archive.expiry import object_versions
from lifecycle_pipelines.archive.reader import decrypt_table, request_restore
from lifecycle_pipelines.archive.stats import table_stats
from lifecycle_pipelines.assets.archive import archive_month_assets
from lifecycle_pipelines.assets.erasure import (
    ABSENT_CHECK,
    erasure_archive_rewrites,
    erasure_hard_delete,
    erasure_ledger_replay,
    erasure_soft_delete,
)
from lifecycle_pipelines.assets.warehouse import warehouse_hourly
from lifecycle_pipelines.erasure import certificate
from lifecycle_pipelines.erasure.holds import lift_hold, place_hold
from lifecycle_pipelines.erasure.requests import submit
from lifecycle_pipelines.local.bootstrap import APP_ROLE
from lifecycle_pipelines.schedules.erasure import erasure_hard_delete_sweep
from lifecycle_pipelines.search_sync.activity import index_activity_month
from tests.erasure.conftest import (
    CONTROL,
    SHOP,
    dynamodb_items_of,
    erasure_resources,
    put_back,
    run_request,
)

MONTHS = (date(2025, 3, 1), date(2025, 6, 1))  # archived here only (not by tests/archive)
ACTIVITY_MONTHS = (date(2026, 9, 1), date(2026, 10, 1))
BACKUP = "shop_erasure_backup"
CONTROL_BACKUP = "control_erasure_backup"
World = dict[str, Any]


def _materialize(assets: list[Any], partition_key: str | None = None) -> dg.ExecuteInProcessResult:
    result = dg.materialize(
        assets, resources=erasure_resources(), partition_key=partition_key, raise_on_error=False
    )
    assert result.success
    return result


def _search_backend() -> Any:
    with dg.build_resources({"search": erasure_resources()["search"]}) as resources:
        return resources.search.get_backend()


def _archive_client() -> Any:
    return boto3.client("s3")


def _objects(control: Any) -> list[manifest.ObjectEntry]:
    return [e for m in MONTHS for e in manifest.get_objects(control, "orders", m)]


def _restore(control: Any, month: date) -> None:
    for entry in manifest.get_objects(control, "orders", month):
        request_restore(_archive_client(), entry, days=1, tier="Bulk")


def _read(entry: manifest.ObjectEntry) -> Any:
    client = _archive_client()
    request_restore(client, entry, days=1, tier="Bulk")
    body = client.get_object(Bucket=entry.bucket, Key=entry.object_key, VersionId=entry.version_id)[
        "Body"
    ].read()
    return pq.read_table(io.BytesIO(body))


def _first(row: tuple[Any, ...] | None) -> Any:
    """The first column of a row that has to exist."""
    assert row is not None
    return row[0]


def _text_hits(conn: Any, schema: str, needles: list[str]) -> int:
    """Rows of any table of `schema` whose text form contains one of the needles."""
    patterns = [f"%{n}%" for n in needles]
    hits = 0
    for (table,) in conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
        " AND table_type = 'BASE TABLE'",
        (schema,),
    ).fetchall():
        query = sql.SQL("SELECT count(*) FROM {} AS t WHERE t::text ILIKE ANY(%s)").format(
            sql.Identifier(schema, table)
        )
        hits += conn.execute(query, (patterns,)).fetchone()[0]
    return hits


@pytest.fixture(scope="module")
def world(local_stack: Any, erasure_databases: str) -> Iterator[World]:
    stack = local_stack[0]
    shop = psycopg.connect(stack.app_conninfo(SHOP), autocommit=True)
    subject, other = (
        str(r[0])
        for r in shop.execute(
            "SELECT o.user_id FROM orders o"
            " WHERE date_trunc('month', o.created_at AT TIME ZONE 'UTC')"
            "   IN ('2025-03-01', '2025-06-01')"
            " AND EXISTS (SELECT 1 FROM user_activity a WHERE a.user_id = o.user_id"
            "   AND a.occurred_at >= '2026-09-01' AND a.occurred_at < '2026-11-01')"
            " GROUP BY o.user_id HAVING count(DISTINCT date_trunc('month', o.created_at)) = 2"
            " ORDER BY count(*) DESC, o.user_id LIMIT 2"
        ).fetchall()
    )
    # The subject's personal values that no other user shares: none may survive anywhere.
    values = shop.execute(
        "SELECT u.email, u.full_name, u.phone, a.line1, a.phone FROM users u"
        " LEFT JOIN addresses a USING (user_id) WHERE u.user_id = %s",
        (int(subject),),
    ).fetchall()
    candidates = {v for row in values for v in row if v}
    needles = [
        v
        for v in sorted(candidates)
        if _first(
            shop.execute(
                "SELECT count(*) FROM users u LEFT JOIN addresses a USING (user_id)"
                " WHERE u.user_id <> %s AND (u.email = %s OR u.full_name = %s OR u.phone = %s"
                " OR a.line1 = %s)",
                (int(subject), v, v, v, v),
            ).fetchone()
        )
        == 0
    ]
    assert len(needles) >= 3
    others_shipping: dict[int, str] = dict(
        shop.execute(
            "SELECT order_id, shipping_line1 FROM orders WHERE user_id = %s"
            " AND created_at >= '2025-03-01' AND created_at < '2025-04-01'",
            (int(other),),
        ).fetchall()
    )
    archived_rows = _first(
        shop.execute(
            "SELECT count(*) FROM orders WHERE user_id = %s"
            " AND date_trunc('month', created_at AT TIME ZONE 'UTC') IN ('2025-03-01', '2025-06-01')",
            (int(subject),),
        ).fetchone()
    )
    # DynamoDB: a session and preferences of the subject. The tables are shared with the rest
    # of the session: the subject's seeded items are put back when the module is done.
    dynamodb = boto3.resource("dynamodb")
    seeded = dynamodb_items_of(subject)
    dynamodb.Table("Sessions").put_item(
        Item={"sessionId": f"erasure-test-{subject}", "userId": subject, "expiryTime": 1,
              "device": "test"}
    )  # fmt: skip
    dynamodb.Table("UserPreferences").put_item(Item={"userId": subject, "language": "de"})
    # Archives: two months of orders, archived and purged.
    archive_assets = [a for a in archive_month_assets() if a.key.path[0].endswith("_orders")]
    for month in MONTHS:
        _materialize(archive_assets, f"{month:%Y-%m-%d}")
    # Search: two monthly activity indices, as the services write them.
    backend = _search_backend()
    for month in ACTIVITY_MONTHS:
        index_activity_month(shop, backend, month)
    # Warehouse: an hour in which one of the subject's orders and their user row changed.
    hour = datetime(2026, 11, 20, 10, tzinfo=UTC)
    for table, key in (("orders", "user_id"), ("users", "user_id")):
        trigger = sql.Identifier(f"{table}_set_updated_at")
        shop.execute(
            sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(sql.Identifier(table), trigger)
        )
        shop.execute(
            sql.SQL(
                "UPDATE {t} SET updated_at = %s WHERE ctid = (SELECT ctid FROM {t}"
                " WHERE {k} = %s ORDER BY created_at DESC LIMIT 1)"
            ).format(t=sql.Identifier(table), k=sql.Identifier(key)),
            (hour.replace(minute=15), int(subject)),
        )
        shop.execute(
            sql.SQL("ALTER TABLE {} ENABLE TRIGGER {}").format(sql.Identifier(table), trigger)
        )
    _materialize([warehouse_hourly], f"{hour:%Y-%m-%d-%H:%M}")
    shop.close()
    yield {
        "subject": subject,
        "other": other,
        "needles": needles,
        "others": others_shipping,
        "archived_rows": archived_rows,
    }
    put_back(seeded)


def _request_of(control: Any, subject: str) -> int:
    row = control.execute(
        "SELECT request_id FROM lifecycle.erasure_requests WHERE subject_id = %s AND NOT dry_run"
        " AND merged_into IS NULL ORDER BY request_id DESC LIMIT 1",
        (subject,),
    ).fetchone()
    return int(row[0])


def _user_exists(shop: Any, subject: str) -> bool:
    return (
        shop.execute("SELECT 1 FROM users WHERE user_id = %s", (int(subject),)).fetchone()
        is not None
    )


def test_grace_period_and_legal_hold_defer_the_hard_delete(
    world: World, shop: Any, control: Any, local_stack: Any
) -> None:
    subject = world["subject"]
    request = submit(control, shop, subject, "privacy@shop.example")
    assert run_request(erasure_soft_delete, request.request_id).success

    early = run_request(erasure_hard_delete, request.request_id)
    assert not early.success and _user_exists(shop, subject)  # inside the grace period

    control.execute(
        "UPDATE lifecycle.erasure_requests SET soft_deleted_at = now() - interval '31 days'"
        " WHERE request_id = %s",
        (request.request_id,),
    )
    with dg.build_schedule_context(
        resources={"control_db": erasure_resources()["control_db"]},
        scheduled_execution_time=datetime.now(UTC),
    ) as context:
        runs = erasure_hard_delete_sweep(context)
    assert str(request.request_id) in [r.partition_key for r in runs]  # type: ignore[union-attr]

    hold = place_hold(
        control, user_id=subject, reason="litigation LIT-7", placed_by="legal@shop.example"
    )
    listed = control.execute(
        "SELECT o.bucket, o.object_key FROM lifecycle.subject_index s"
        " JOIN lifecycle.archive_objects o USING (object_id) WHERE s.subject_id = %s LIMIT 1",
        (subject,),
    ).fetchone()
    object_hold = place_hold(
        control,
        s3_uri=f"s3://{listed[0]}/{listed[1]}",
        reason="tax audit 2025",
        placed_by="legal@shop.example",
    )
    held = run_request(erasure_hard_delete, request.request_id)
    assert held.success
    metadata = held.asset_materializations_for_node("erasure_hard_delete")[0].metadata
    assert metadata["state"].value == "held"
    (absent,) = held.get_asset_check_evaluations()  # nothing erased: nothing proven
    assert not absent.passed and absent.severity == dg.AssetCheckSeverity.WARN
    summary = cast(str, metadata["summary"].value)
    assert f"hold {hold} on subject" in summary  # the hold by id: its reason is free text
    assert "litigation LIT-7" not in summary and "tax audit" not in summary
    assert f"s3://{listed[0]}/{listed[1]}" in summary
    assert lift_hold(control, hold, "legal@shop.example")
    still = run_request(erasure_hard_delete, request.request_id)  # the object hold remains
    assert (
        still.asset_materializations_for_node("erasure_hard_delete")[0].metadata["state"].value
        == "held"
    )
    deferrals = "SELECT count(*) FROM lifecycle.erasure_ledger WHERE request_id = %s"
    recorded = control.execute(deferrals, (request.request_id,)).fetchone()
    again = run_request(erasure_hard_delete, request.request_id)  # tomorrow's sweep, same hold
    assert (
        again.asset_materializations_for_node("erasure_hard_delete")[0].metadata["state"].value
        == "held"
    )
    assert control.execute(deferrals, (request.request_id,)).fetchone() == recorded
    assert _user_exists(shop, subject)
    assert control.execute(
        "SELECT wrapped_key IS NOT NULL FROM lifecycle.subject_keys WHERE subject_id = %s",
        (subject,),
    ).fetchone() == (True,)
    assert lift_hold(control, object_hold, "legal@shop.example")

    # The backup a later test restores: taken after the soft delete, before the hard delete.
    admin = local_stack[0].postgres.start().conninfo()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
            " AND pid <> pg_backend_pid()",
            (SHOP,),
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(BACKUP)))
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(BACKUP), sql.Identifier(SHOP)
            )
        )
    _copy_database(admin, CONTROL, CONTROL_BACKUP)  # the control database's, at the same point


def _copy_database(admin: str, source: str, target: str) -> None:
    """`target` dropped and created afresh as a copy of `source` (its sessions ended first)."""
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname IN (%s, %s)"
            " AND pid <> pg_backend_pid()",
            (source, target),
        )
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(target)))
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
                sql.Identifier(target), sql.Identifier(source), sql.Identifier(APP_ROLE)
            )
        )


def test_hard_delete_leaves_no_trace_in_any_store(
    world: World, shop: Any, control: Any, warehouse: Any
) -> None:
    subject, needles = world["subject"], world["needles"]
    request_id = _request_of(control, subject)
    _restore(control, MONTHS[0])  # one month readable now: rewritten at once; the other waits
    versions_before = {
        e.object_key: len(object_versions(_archive_client(), e.bucket, e.object_key))
        for e in _objects(control)
    }

    result = run_request(erasure_hard_delete, request_id)

    assert result.success
    metadata = result.asset_materializations_for_node("erasure_hard_delete")[0].metadata
    assert metadata["state"].value == "hard_deleted"
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {ABSENT_CHECK: True}
    plans = dict(
        control.execute(
            "SELECT decision, count(*) FROM lifecycle.erasure_rewrites WHERE request_id = %s"
            " GROUP BY decision",
            (request_id,),
        ).fetchall()
    )
    assert plans.get("rewrite_now", 0) >= 1 and plans.get("with_next_restore", 0) >= 1
    _restore(control, MONTHS[1])  # a later restore: the waiting rewrites happen
    rewrites = _materialize([erasure_archive_rewrites])
    assert (
        rewrites.asset_materializations_for_node("erasure_archive_rewrites")[0]
        .metadata["objects_rewritten"]
        .value
        == plans["with_next_restore"]
    )

    erased_rows = control.execute(
        "SELECT sum(rows_rewritten) FROM lifecycle.erasure_rewrites WHERE request_id = %s",
        (request_id,),
    ).fetchone()[0]
    assert erased_rows == world["archived_rows"]  # every archived row of theirs, no one else's
    # PostgreSQL and the warehouse: no row anywhere contains the subject's values.
    assert _text_hits(shop, "public", needles) == 0
    assert not _user_exists(shop, subject)
    assert shop.execute(
        "SELECT count(*) FROM orders WHERE user_id = %s", (int(subject),)
    ).fetchone() == (0,)
    assert _text_hits(warehouse, "analytics", needles) == 0
    user_key = json.loads(_certificate_body(control, request_id))["subject_pseudonym"]
    assert warehouse.execute(
        "SELECT (SELECT count(*) FROM analytics.dim_users WHERE user_key = %s)"
        " + (SELECT count(*) FROM analytics.fact_orders WHERE user_key = %s)",
        (user_key, user_key),
    ).fetchone() == (0,)
    # DynamoDB.
    dynamodb = boto3.resource("dynamodb")
    assert (
        dynamodb.Table("Sessions").query(
            IndexName="userId-index", KeyConditionExpression=Key("userId").eq(subject)
        )["Count"]
        == 0
    )
    assert "Item" not in dynamodb.Table("UserPreferences").get_item(Key={"userId": subject})
    # Every monthly activity index, not only the newest.
    backend = _search_backend()
    indices = backend.list_indices("users-activity-*")
    assert len(indices) >= len(ACTIVITY_MONTHS)
    assert all(backend.count_term(i, "user_id", subject) == 0 for i in indices)
    # Archives: every version of every object; the subject's rows hold nothing readable.
    keyring = SubjectKeyring(control, boto3.client("kms"), os.environ["LIFECYCLE_KMS_KEY_ID"])
    for entry in _objects(control):
        versions = object_versions(_archive_client(), entry.bucket, entry.object_key)
        assert versions_before[entry.object_key] >= 1 and len(versions) == 1  # old ones gone
        table = _read(entry)
        if "user_id" in table.column_names:  # orders (order_items carry no subject)
            assert int(subject) not in set(table.column("user_id").to_pylist())
        decrypted = decrypt_table(table, keyring)
        text = str(decrypted.to_pylist())
        assert not any(n in text for n in needles)
    assert keyring.keys([subject], create=True) == {subject: None}  # never a new key


def _certificate_body(control: Any, request_id: int) -> bytes:
    cert = certificate.get(control, request_id)
    assert cert is not None
    return bytes(
        _archive_client()
        .get_object(Bucket=cert.bucket, Key=cert.object_key, VersionId=cert.version_id)["Body"]
        .read()
    )


def test_others_stay_intact_reconciliations_pass_and_the_certificate_proves_it(
    world: World, shop: Any, control: Any
) -> None:
    keyring = SubjectKeyring(control, boto3.client("kms"), os.environ["LIFECYCLE_KMS_KEY_ID"])
    others = world["others"]
    seen: dict[int, str] = {}
    for entry in manifest.get_objects(control, "orders", MONTHS[0]):
        table = _read(entry)
        if entry.table_name == "orders":
            for row in decrypt_table(table, keyring).to_pylist():
                if row["order_id"] in others:
                    seen[row["order_id"]] = row["shipping_line1"]
            stats = table_stats(table, "order_id", ["subtotal", "shipping_fee", "tax", "total"])
        else:
            stats = table_stats(table, "order_item_id", ["unit_price", "line_total"])
        assert (stats.rows, stats.pk_sum, stats.pk_hash_sum) == (
            entry.row_count, entry.pk_sum, entry.pk_hash_sum
        )  # fmt: skip
        assert stats.money_text() == entry.money_sums
    assert seen == others

    request_id = _request_of(control, world["subject"])
    body = _certificate_body(control, request_id)
    document = json.loads(body)
    assert document["outcome"] == "erased"
    assert not any(n in body.decode() for n in world["needles"])
    stores = {(s["phase"], s["store"]): s for s in document["stores"]}
    assert stores[("hard delete", "postgres.users")]["changed"] == 1
    assert stores[("hard delete", "archive.subject_key")]["changed"] == 1
    assert all(v["remaining"] == 0 for v in document["verification"])
    with dg.build_resources({"s3": erasure_resources()["s3"]}) as resources:
        assert certificate.verify_chain(control, resources.s3) == []
    retention = _archive_client().head_object(
        Bucket=certificate.get(control, request_id).bucket,  # type: ignore[union-attr]
        Key=certificate.get(control, request_id).object_key,  # type: ignore[union-attr]
    )
    assert retention["ObjectLockMode"] == "COMPLIANCE"


def test_repeating_the_request_changes_nothing(world: World, control: Any) -> None:
    request_id = _request_of(control, world["subject"])
    before = certificate.get(control, request_id)
    # a hold placed after the hard delete does not turn the finished request back into "held"
    hold = place_hold(
        control, user_id=world["subject"], reason="late hold", placed_by="legal@shop.example"
    )
    try:
        again = run_request(erasure_hard_delete, request_id)
    finally:
        lift_hold(control, hold, "legal@shop.example")
    assert again.success
    metadata = again.asset_materializations_for_node("erasure_hard_delete")[0].metadata
    assert metadata["items_changed"].value == 0
    assert metadata["state"].value == "hard_deleted"
    assert certificate.get(control, request_id) == before
    state = control.execute(
        "SELECT state FROM lifecycle.erasure_requests WHERE request_id = %s", (request_id,)
    ).fetchone()
    assert state == ("hard_deleted",)


def test_a_database_restore_then_the_ledger_replay_leaves_the_subject_erased(
    world: World, local_stack: Any, control: Any
) -> None:
    subject = world["subject"]
    admin = local_stack[0].postgres.start().conninfo()
    with psycopg.connect(admin, autocommit=True) as conn:  # restore the shop from the backup
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (SHOP,),
        )
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(SHOP)))
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(SHOP), sql.Identifier(BACKUP)
            )
        )
    with psycopg.connect(local_stack[0].app_conninfo(SHOP), autocommit=True) as shop:
        assert _user_exists(shop, subject)  # the restore brought the subject back
        replay = _materialize([erasure_ledger_replay])
        metadata = replay.asset_materializations_for_node("erasure_ledger_replay")[0].metadata
        assert cast(int, metadata["items_erased_again"].value) > 0
        assert not _user_exists(shop, subject)
        assert _text_hits(shop, "public", world["needles"]) == 0
    ledger = control.execute(
        "SELECT count(*) FROM lifecycle.erasure_ledger WHERE action = 'replayed after restore'"
    ).fetchone()
    assert ledger[0] > 0


def test_a_control_database_restore_recovers_the_certificates_and_erases_again(
    world: World, local_stack: Any
) -> None:
    """The control database and the shop are both restored from the backups taken before the
    hard delete: the database forgets the request's certificate and its destroyed key, the shop
    brings the subject back, and the manifest names object versions the erasure rewrite has
    deleted since. The certificate in S3 is found, no certificate is issued over it, the replay
    records it again and erases the subject again, and the manifest follows the versions S3
    holds."""
    subject = world["subject"]
    admin = local_stack[0].postgres.start().conninfo()
    _copy_database(admin, CONTROL_BACKUP, CONTROL)
    _copy_database(admin, BACKUP, SHOP)
    with (
        psycopg.connect(local_stack[0].app_conninfo(CONTROL), autocommit=True) as control,
        psycopg.connect(local_stack[0].app_conninfo(SHOP), autocommit=True) as shop,
        dg.build_resources({"s3": erasure_resources()["s3"]}) as resources,
    ):
        request_id = _request_of(control, subject)
        assert certificate.get(control, request_id) is None  # forgotten by the restore
        assert _user_exists(shop, subject)
        problems = certificate.verify_chain(control, resources.s3)
        lost = [p for p in problems if "has no record of" in p]
        assert lost and all(f"-request-{request_id}.json" in p for p in lost[-1:])
        document = certificate.certificate_document(
            control, request_id, subject_pseudonym="x", outcome="erased", remaining=[]
        )
        with pytest.raises(certificate.ChainAhead, match="Nothing was issued"):
            # another request's certificate would take the lost one's place: the chain forks
            certificate.issue(control, resources.s3, request_id + 10_000, document)

        replay = _materialize([erasure_ledger_replay])
        metadata = replay.asset_materializations_for_node("erasure_ledger_replay")[0].metadata
        assert cast(int, metadata["certificates_recovered"].value) == len(lost)
        assert not _user_exists(shop, subject)
        assert _text_hits(shop, "public", world["needles"]) == 0
        key = control.execute(
            "SELECT wrapped_key FROM lifecycle.subject_keys WHERE subject_id = %s", (subject,)
        ).fetchone()
        assert key == (None,)  # destroyed again
        assert certificate.verify_chain(control, resources.s3) == []
        state = control.execute(
            "SELECT state FROM lifecycle.erasure_requests WHERE request_id = %s", (request_id,)
        ).fetchone()
        assert state == ("hard_deleted",)
        assert certificate.get(control, request_id) is not None
        for entry in _objects(control):  # every recorded version exists
            _archive_client().head_object(
                Bucket=entry.bucket, Key=entry.object_key, VersionId=entry.version_id
            )

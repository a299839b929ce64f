"""Benchmark: GDPR hard delete of one data subject from MONTHS archived months of orders.

Seeds a throw-away embedded stack with ORDERS orders (default 4.8M = 24 months x 200k) over the
MONTHS months (default 24) that end where the orders policy's 12-month active window begins, so
that every seeded month is eligible, and archives each of them with `MonthArchiver` (the code
the `archive_orders` asset runs: zstd Parquet, per-subject AES-GCM, GLACIER, subject index;
`--max-rows-per-object`, default the product's 500k). No purge. Two regular customers with
orders in the most archived months are erased, each step in its own process so that its peak
RSS is its own:

1. A: submitted, soft-deleted, `soft_deleted_at` moved back past the grace period, then
   `hard_delete` with every store's eraser (`open_stores`), timed. The objects are in GLACIER:
   A's key is destroyed and each object listing A is planned `with_next_restore`, none is read.
2. `request_restore` of every archived object (moto completes restores at once).
3. `rewrite_pending`, the product's rewrite of planned objects once they are readable: A's
   objects are rewritten. A rewritten object is back in GLACIER, so all are restored again.
4. The naive peer, what a tool without a subject index does (S3 Find and Forget's find phase):
   download every object of the table that holds the subject column, read that column from the
   Parquet and filter it for B. A lower bound for such a tool: it then rewrites the same
   objects, and on GLACIER it must first restore every object.
5. B: the same hard delete as A, now with readable objects, so each listed object is rewritten
   at once (`rewrite_now`): seconds and MB per rewritten object.
6. Every object is restored again and scanned: no row may still carry A's or B's id.

For steps 1, 3 and 5 every S3 call on the archive bucket is recorded (operation and key) and
every version of every key is listed before and after: only objects the subject index lists
(step 3: the planned ones) may be headed, read or changed, besides the new certificate.

    .venv/bin/python bench/erasure/run.py [--orders N] [--months M]
        [--max-rows-per-object R] [--state-dir DIR]

Prints each step (seconds, peak RSS, objects in the archive, listing the subject, headed,
downloaded, written, MB rewritten), a table and the ratios ours / naive. --state-dir reuses the
seeded shop between invocations; the archive is written again each time (moto keeps objects in
memory only) and two subjects not erased before are chosen.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg

from lifecycle_pipelines.local.seed import ShopSize, seed_shop
from lifecycle_pipelines.local.stack import LocalStack

DATA_TYPE = "orders"
REQUESTER = "privacy@shop.example"


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM; ru_maxrss would include the pre-exec parent image)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def archive_end() -> date:
    """The first month inside the orders policy's active window today: every earlier month may
    be archived, so the seed ends here."""
    from lifecycle_pipelines.policy import load_policy

    return load_policy().get(DATA_TYPE).oldest_active_month(datetime.now(UTC).date())


def months_before(end: date, months: int) -> list[date]:
    """The `months` complete months before `end`, oldest first."""
    first = end.year * 12 + end.month - 1 - months
    return [date((first + i) // 12, (first + i) % 12 + 1, 1) for i in range(months)]


# -- children: one measurement per process ---------------------------------------------
def child_archive(stack: LocalStack, args: argparse.Namespace) -> dict[str, Any]:
    import dagster as dg

    from lifecycle_pipelines.archive.archiver import MonthArchiver
    from lifecycle_pipelines.archive.plan import ArchiveMonth, PartitionError, check_eligible
    from lifecycle_pipelines.environments import resources_for
    from lifecycle_pipelines.policy import load_policy

    policy = load_policy().get(DATA_TYPE)
    seeded = json.loads((stack.state_dir / "bench-seeded.json").read_text())
    today = datetime.now(UTC).date()
    archived, skipped, objects, rows = [], [], 0, 0
    with dg.build_resources(resources_for("local")) as r:
        for month in months_before(date.fromisoformat(seeded["end"]), seeded["months"]):
            try:
                check_eligible(ArchiveMonth(DATA_TYPE, month), policy, today)
            except PartitionError:
                skipped.append(f"{month:%Y-%m}")
                continue
            result = MonthArchiver(
                data_type=DATA_TYPE,
                policy=policy,
                month=ArchiveMonth(DATA_TYPE, month),
                shop=r.shop_db,
                control=r.control_db,
                s3=r.s3,
                max_rows_per_object=args.max_rows_per_object,
            ).run()
            if not result.passed:
                raise RuntimeError(f"verification failed for {month:%Y-%m}")
            archived.append(f"{month:%Y-%m}")
            objects += len(result.objects)
            rows += sum(e.row_count for e in result.objects)
    return {"months": archived, "skipped": skipped, "objects": objects, "rows": rows}


def bucket_versions(client: Any, bucket: str) -> dict[str, list[tuple[str, ...]]]:
    """Every version and delete marker of every key: (version id, last modified, latest)."""
    found: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
            found[item["Key"]].append(
                (item["VersionId"], item["LastModified"].isoformat(), str(item["IsLatest"]))
            )
    return {key: sorted(versions) for key, versions in found.items()}


class S3Audit:
    """Within `with`: every call `client` makes on `bucket` (operation, key); on entry and exit
    every version of every key of the bucket, listed by the same client outside the window."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket
        self.calls: list[tuple[str, str]] = []
        self.before: dict[str, list[tuple[str, ...]]] = {}
        self.after: dict[str, list[tuple[str, ...]]] = {}

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if params.get("Bucket") == self.bucket:
            self.calls.append((model.name, params.get("Key") or params.get("Prefix") or ""))

    def _start(self, context: dict[str, Any], **_: Any) -> None:
        context["bench_started"] = time.perf_counter()

    def _stop(self, context: dict[str, Any], model: Any, **_: Any) -> None:
        if "bench_started" in context:
            self.seconds[model.name] += time.perf_counter() - context.pop("bench_started")

    def __enter__(self) -> S3Audit:
        self.before = bucket_versions(self.client, self.bucket)
        self.seconds: dict[str, float] = defaultdict(float)
        for event, handler in self._handlers():
            self.client.meta.events.register(event, handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for event, handler in self._handlers():
            self.client.meta.events.unregister(event, handler)
        self.after = bucket_versions(self.client, self.bucket)

    def _handlers(self) -> list[tuple[str, Any]]:
        return [
            ("before-parameter-build.s3", self._record),
            ("before-call.s3", self._start),
            ("after-call.s3", self._stop),
        ]

    def summary(self, allowed: set[str], certificate_prefix: str) -> dict[str, Any]:
        """Counts of keys headed, downloaded, written and changed, and of those not `allowed`
        (certificates, written under their own prefix, are counted apart)."""
        keys = self.before.keys() | self.after.keys()
        changed = {k for k in keys if self.before.get(k) != self.after.get(k)}
        certificates = {k for k in changed if k.startswith(certificate_prefix)}
        touched = {k for _, k in self.calls} - certificates

        def keys_of(*operations: str) -> set[str]:
            return {k for op, k in self.calls if op in operations} - certificates

        return {
            "s3_calls": len(self.calls),
            "s3_calls_by_operation": _count(op for op, _ in self.calls),
            "s3_seconds_by_operation": dict(sorted(self.seconds.items())),
            "keys_headed": len(keys_of("HeadObject")),
            "keys_downloaded": len(keys_of("GetObject")),
            "keys_written": len(keys_of("PutObject", "DeleteObject", "CopyObject")),
            "keys_changed": len(changed - certificates),
            "certificates_written": len(certificates),
            "unlisted_touched": len(touched - allowed),
            "unlisted_changed": len(changed - certificates - allowed),
            "keys_in_bucket": len(self.after),
        }


def _rewrites(control: Any, where: str, params: tuple[Any, ...]) -> dict[str, Any]:
    """Objects, rows erased and bytes of the rewrites matching `where` that are done."""
    row = control.execute(
        "SELECT count(DISTINCT object_id), coalesce(sum(r.rows_rewritten), 0),"
        " coalesce(sum(o.size_bytes), 0) FROM lifecycle.erasure_rewrites r"
        " JOIN lifecycle.archive_objects o USING (object_id) WHERE r.state = 'done' AND " + where,
        params,
    ).fetchone()
    assert row is not None
    return {"objects_rewritten": int(row[0]), "rows_rewritten": int(row[1]),
            "bytes_written": int(row[2])}  # fmt: skip


def child_erase(stack: LocalStack, args: argparse.Namespace) -> dict[str, Any]:
    import dagster as dg

    from lifecycle_pipelines.archive.eraser import listed_objects
    from lifecycle_pipelines.assets.erasure.erasers import open_stores
    from lifecycle_pipelines.assets.erasure.hard_delete_asset import grace_period
    from lifecycle_pipelines.control import ensure_control_schema
    from lifecycle_pipelines.environments import resources_for
    from lifecycle_pipelines.erasure.certificate import CERTIFICATE_PREFIX
    from lifecycle_pipelines.erasure.hard_delete import check_due, hard_delete
    from lifecycle_pipelines.erasure.requests import status, submit
    from lifecycle_pipelines.erasure.soft_delete import record

    subject_id = args.subject
    with dg.build_resources(resources_for("local")) as r:
        audit = S3Audit(r.s3.client("s3"), r.s3.bucket("archive"))
        with open_stores(
            control_db=r.control_db, shop_db=r.shop_db, s3=r.s3, dynamodb=r.dynamodb,
            search=r.search, warehouse=r.warehouse,
        ) as stores:  # fmt: skip
            control = stores.control
            ensure_control_schema(control)
            request = submit(control, stores.shop, subject_id, REQUESTER)
            record(control, request.request_id, stores.soft_delete(request, dry_run=False),
                   dry_run=False)  # fmt: skip
            control.execute(
                "UPDATE lifecycle.erasure_requests SET soft_deleted_at = now() - interval"
                " '31 days' WHERE request_id = %s",
                (request.request_id,),
            )
            request = check_due(status(control, request.request_id), grace_period(),
                                datetime.now(UTC))  # fmt: skip
            subject = stores.subject(request)
            total = control.execute(
                "SELECT count(*), coalesce(sum(size_bytes), 0) FROM lifecycle.archive_objects"
                " WHERE state <> 'expired'"
            ).fetchone()
            assert total is not None
            started = time.perf_counter()
            listed = listed_objects(control, subject_id)
            lookup_seconds = time.perf_counter() - started
            sizes = _sizes(control, listed)
            erasers = [Timed(e) for e in stores.erasers(request)]
            with audit:
                started = time.perf_counter()
                outcome = hard_delete(control, request, subject, erasers,
                                      issue_certificate=stores.issue_certificate)  # fmt: skip
                seconds = time.perf_counter() - started
            plan = dict(
                control.execute(
                    "SELECT decision || '/' || state, count(*) FROM lifecycle.erasure_rewrites"
                    " WHERE request_id = %s GROUP BY 1",
                    (request.request_id,),
                ).fetchall()
            )
            done = _rewrites(control, "r.request_id = %s", (request.request_id,))
            done_keys = {
                k
                for (k,) in control.execute(
                    "SELECT o.object_key FROM lifecycle.erasure_rewrites r"
                    " JOIN lifecycle.archive_objects o USING (object_id)"
                    " WHERE r.request_id = %s AND r.state = 'done'",
                    (request.request_id,),
                )
            }
    listed_keys = {o.object_key for o in listed}
    return {
        "state": outcome.state,
        "seconds": seconds,
        "eraser_seconds": {e.name: e.seconds for e in erasers},
        "rss": peak_rss_mib(),
        "lookup_seconds": lookup_seconds,
        "objects_total": int(total[0]),
        "bytes_total": int(total[1]),
        "objects_listed": len(listed),
        "months_listed": len({o.partition_month for o in listed}),
        "subject_rows": sum(o.rows for o in listed),
        "plan": plan,
        **done,
        "bytes_read": sum(size for key, size in sizes.items() if key in done_keys),
        **audit.summary(listed_keys, CERTIFICATE_PREFIX),
        "listed_keys": sorted(listed_keys),
    }


def child_pending(stack: LocalStack, args: argparse.Namespace) -> dict[str, Any]:
    """The product's rewrite of planned objects once a restore made them readable."""
    import dagster as dg

    from lifecycle_pipelines.archive.eraser import rewrite_pending
    from lifecycle_pipelines.environments import resources_for
    from lifecycle_pipelines.erasure.certificate import CERTIFICATE_PREFIX

    with (
        dg.build_resources(resources_for("local")) as r,
        r.control_db.connect(autocommit=True) as control,
    ):
        audit = S3Audit(r.s3.client("s3"), r.s3.bucket("archive"))
        pending = dict(
            control.execute(
                "SELECT DISTINCT o.object_key, o.size_bytes FROM lifecycle.erasure_rewrites r"
                " JOIN lifecycle.archive_objects o USING (object_id) WHERE r.state = 'pending'"
            ).fetchall()
        )
        marked = control.execute("SELECT coalesce(max(done_at), now()) FROM"
                                 " lifecycle.erasure_rewrites").fetchone()  # fmt: skip
        assert marked is not None
        with audit:
            started = time.perf_counter()
            counts = rewrite_pending(control, r.s3)
            seconds = time.perf_counter() - started
        done = _rewrites(control, "r.done_at > %s", (marked[0],))
    return {
        "seconds": seconds,
        "rss": peak_rss_mib(),
        "objects_pending": len(pending),
        "counts": counts,
        **done,
        "bytes_read": sum(int(size) for size in pending.values()),
        **audit.summary(set(pending), CERTIFICATE_PREFIX),
    }


def _sizes(control: Any, listed: list[Any]) -> dict[str, int]:
    """Size in bytes of each listed object (its recorded version), by key."""
    rows = control.execute(
        "SELECT object_key, size_bytes FROM lifecycle.archive_objects WHERE object_id = ANY(%s)",
        ([o.object_id for o in listed],),
    ).fetchall()
    return {str(key): int(size) for key, size in rows}


def _count(items: Any) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for item in items:
        counts[item] += 1
    return dict(sorted(counts.items()))


class Timed:
    """An eraser that adds the seconds spent in it (erase and remaining) to `seconds`."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.seconds = 0.0

    def erase(self, subject: Any, *, dry_run: bool) -> Any:
        started = time.perf_counter()
        try:
            return self.inner.erase(subject, dry_run=dry_run)
        finally:
            self.seconds += time.perf_counter() - started

    def remaining(self, subject: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.inner.remaining(subject)
        finally:
            self.seconds += time.perf_counter() - started


def _live_entries(conn: Any) -> list[Any]:
    from lifecycle_pipelines.archive import manifest

    months = conn.execute(
        "SELECT DISTINCT partition_month FROM lifecycle.archive_objects"
        " WHERE data_type = %s AND state <> 'expired' ORDER BY 1",
        (DATA_TYPE,),
    ).fetchall()
    return [
        e
        for (month,) in months
        for e in manifest.get_objects(conn, DATA_TYPE, month)
        if e.state != "expired"
    ]


def child_restore(stack: LocalStack, args: argparse.Namespace) -> dict[str, Any]:
    import dagster as dg

    from lifecycle_pipelines.archive.reader import readability, request_restore
    from lifecycle_pipelines.environments import resources_for

    with (
        dg.build_resources(resources_for("local")) as r,
        r.control_db.connect(autocommit=True) as conn,
    ):
        client = r.s3.client("s3")
        entries = _live_entries(conn)
        for entry in entries:
            if not readability(client, entry).readable:
                request_restore(client, entry, days=7, tier="Standard")
        readable = sum(readability(client, entry).readable for entry in entries)
    return {"objects": len(entries), "readable": readable}


def child_naive(stack: LocalStack, args: argparse.Namespace) -> dict[str, Any]:
    import dagster as dg
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from lifecycle_pipelines.environments import resources_for
    from lifecycle_pipelines.policy import load_policy

    policy = load_policy().get(DATA_TYPE)
    column = policy.subject_column
    assert column is not None
    with (
        dg.build_resources(resources_for("local")) as r,
        r.control_db.connect(autocommit=True) as conn,
    ):
        client = r.s3.client("s3")
        entries = [e for e in _live_entries(conn) if e.table_name == policy.table]
        skipped = conn.execute(
            "SELECT count(*) FROM lifecycle.archive_objects WHERE data_type = %s"
            " AND state <> 'expired' AND table_name <> %s",
            (DATA_TYPE, policy.table),
        ).fetchone()
    found, rows, downloaded = [], 0, 0
    wanted = pa.array([int(s) for s in args.subject.split(",")], pa.int64())
    started = time.perf_counter()
    for entry in entries:
        body = client.get_object(
            Bucket=entry.bucket, Key=entry.object_key, VersionId=entry.version_id
        )["Body"].read()
        downloaded += len(body)
        subjects = pq.read_table(io.BytesIO(body), columns=[column]).column(column)
        hits = pc.sum(pc.is_in(subjects, value_set=wanted.cast(subjects.type))).as_py() or 0
        if hits:
            found.append(entry.object_key)
            rows += hits
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rss": peak_rss_mib(),
        "objects_scanned": len(entries),
        "objects_skipped": int(skipped[0]) if skipped else 0,
        "bytes_downloaded": downloaded,
        "objects_found": sorted(found),
        "rows_found": rows,
    }


CHILDREN = {
    "archive": child_archive,
    "erase": child_erase,
    "pending": child_pending,
    "restore": child_restore,
    "naive": child_naive,
}


def child(args: argparse.Namespace) -> None:
    stack = LocalStack(Path(args.state_dir))
    os.environ.update(stack.read_env())
    started = time.perf_counter()
    result = CHILDREN[args.child](stack, args)
    result.setdefault("seconds", time.perf_counter() - started)
    result.setdefault("rss", peak_rss_mib())
    sys.stdout.write(json.dumps(result, default=str) + "\n")


# -- the driver ------------------------------------------------------------------------
def shop_size(orders: int, months: int, end: date) -> ShopSize:
    return ShopSize(
        users=max(1_000, orders // 25),
        products=max(1_000, orders // 200),
        orders=orders,
        months=months,
        activity_per_order=0.0,
        as_of=end,
    )


def seed_dynamodb_items(stack: LocalStack, size: ShopSize) -> dict[str, int]:
    """Sessions and UserPreferences items (moto keeps them in memory: written on every start)."""
    import boto3

    from lifecycle_pipelines.local.seed import seed_dynamodb

    env = stack.read_env()
    dynamodb = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    ).resource("dynamodb", endpoint_url=env["AWS_ENDPOINT_URL"])
    return seed_dynamodb(dynamodb, size)


def start(stack: LocalStack, orders: int, months: int) -> dict[str, Any]:
    """Seed a fresh stack, or restart a seeded one and forget its archive (moto's objects are
    gone with the process): returns what was seeded."""
    marker = stack.state_dir / "bench-seeded.json"
    if marker.exists():
        stack.up()
        seeded: dict[str, Any] = json.loads(marker.read_text())
        with psycopg.connect(stack.app_conninfo("lifecycle"), autocommit=True) as conn:
            conn.execute(
                "TRUNCATE lifecycle.subject_index, lifecycle.archive_objects,"
                " lifecycle.archive_partitions, lifecycle.subject_keys,"
                " lifecycle.key_encryption_keys, lifecycle.erasure_rewrites,"
                " lifecycle.erasure_certificates CASCADE"
            )
        size = shop_size(seeded["orders"], seeded["months"], date.fromisoformat(seeded["end"]))
        seed_dynamodb_items(stack, size)
        print(f"reusing {stack.state_dir}: {seeded['orders']} orders over {seeded['months']} "
              f"months before {seeded['end']}, archived again")  # fmt: skip
        return seeded
    started = time.perf_counter()
    end = archive_end()
    stack.up(fresh=True)
    size = shop_size(orders, months, end)
    with psycopg.connect(stack.app_conninfo()) as conn:
        report = seed_shop(conn, size)
    seeded = {
        "orders": orders,
        "months": months,
        "end": end.isoformat(),
        "rows": {**report.rows, **seed_dynamodb_items(stack, size)},
    }
    marker.write_text(json.dumps(seeded))
    print(f"seeded {orders} orders over the {months} months before {end} (the orders policy's "
          f"active window starts there) in {time.perf_counter() - started:.0f}s")  # fmt: skip
    return seeded


def run_child(state_dir: Path, name: str, *extra: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", name, "--state-dir", str(state_dir), *extra],
        check=False, capture_output=True, text=True,
    )  # fmt: skip
    if out.returncode:
        tail = "\n".join(out.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"step {name} failed (exit {out.returncode}):\n{tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def subject_spread(stack: LocalStack) -> dict[str, float]:
    """How many objects the subject index lists per subject: median, p90, max, and subjects."""
    with psycopg.connect(stack.app_conninfo("lifecycle")) as conn:
        row = conn.execute(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY n),"
            " percentile_cont(0.9) WITHIN GROUP (ORDER BY n), max(n), count(*)"
            " FROM (SELECT count(*) AS n FROM lifecycle.subject_index GROUP BY subject_id) s"
        ).fetchone()
    assert row is not None
    return {"median": row[0], "p90": row[1], "max": row[2], "subjects": row[3]}


def pick_subjects(stack: LocalStack) -> list[tuple[str, int, int]]:
    """Two customers with orders in the most archived months (and, among those, the fewest
    archived orders: regular customers, not the seed's few heavy buyers) never erased before:
    (subject id, months, rows)."""
    with psycopg.connect(stack.app_conninfo("lifecycle")) as conn:
        rows = conn.execute(
            "SELECT s.subject_id, count(DISTINCT o.partition_month) AS months,"
            " sum(s.row_count) AS subject_rows"
            " FROM lifecycle.subject_index s JOIN lifecycle.archive_objects o USING (object_id)"
            " WHERE o.state <> 'expired' AND s.subject_id ~ '^[0-9]+$'"
            " AND NOT EXISTS (SELECT 1 FROM lifecycle.erasure_requests r"
            "   WHERE r.subject_id = s.subject_id)"
            " GROUP BY s.subject_id ORDER BY months DESC, subject_rows, s.subject_id LIMIT 2"
        ).fetchall()
    if len(rows) < 2:
        raise RuntimeError("fewer than two archived subjects left to erase: reseed")
    return [(str(r[0]), int(r[1]), int(r[2])) for r in rows]


def mib(value: float) -> float:
    return value / (1 << 20)


def report_touch(r: dict[str, Any], allowed: str) -> None:
    seconds = r["s3_seconds_by_operation"]
    calls = ", ".join(
        f"{k} {v} in {seconds.get(k, 0.0):.2f} s" for k, v in r["s3_calls_by_operation"].items()
    )
    print(f"  S3 calls on the archive bucket: {r['s3_calls']} ({calls}); keys headed "
          f"{r['keys_headed']}, downloaded {r['keys_downloaded']}, written {r['keys_written']}, "
          f"changed (every version listed before and after) {r['keys_changed']}"
          f" + {r['certificates_written']} certificate")  # fmt: skip
    clean = r["unlisted_touched"] == r["unlisted_changed"] == 0
    print(f"  keys outside {allowed} touched / changed: {r['unlisted_touched']} / "
          f"{r['unlisted_changed']} of {r['keys_in_bucket']} keys in the bucket -> "
          f"{'none' if clean else 'FAILED: other objects were touched'}")  # fmt: skip


def report_erasure(label: str, r: dict[str, Any]) -> None:
    plan = ", ".join(f"{k} {v}" for k, v in sorted(r["plan"].items())) or "-"
    others = ", ".join(f"{k} {v:.2f} s" for k, v in r["eraser_seconds"].items() if k != "archive")
    print(f"{label}: {r['state']} in {r['seconds']:.2f} s (archive eraser "
          f"{r['eraser_seconds']['archive']:.2f} s; {others}), peak RSS {r['rss']:.0f} MiB")  # fmt: skip
    print(f"  subject: {r['subject_rows']} archived rows in {r['months_listed']} months; "
          f"subject index lookup {r['lookup_seconds'] * 1000:.1f} ms")  # fmt: skip
    print(f"  objects: {r['objects_total']} archived ({mib(r['bytes_total']):.1f} MiB), "
          f"{r['objects_listed']} list the subject; plan: {plan}")  # fmt: skip
    print(f"  rewritten now: {r['objects_rewritten']} objects, {r['rows_rewritten']} rows erased, "
          f"{mib(r['bytes_read']):.1f} MiB read, {mib(r['bytes_written']):.1f} MiB written")  # fmt: skip
    report_touch(r, "the listed objects")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=4_800_000)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--max-rows-per-object", type=int, default=500_000)
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--child", choices=sorted(CHILDREN))
    parser.add_argument("--subject")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="bench-erasure-"))
    stack = LocalStack(state_dir)
    try:
        start(stack, args.orders, args.months)
        archived = run_child(
            state_dir, "archive", "--max-rows-per-object", str(args.max_rows_per_object)
        )
        spread = subject_spread(stack)
        print(f"archived {len(archived['months'])} months ({archived['months'][0]} .. "
              f"{archived['months'][-1]}; {len(archived['skipped'])} inside the active window "
              f"skipped) with MonthArchiver, max {args.max_rows_per_object} rows per object: "
              f"{archived['objects']} objects, {archived['rows']} rows in "
              f"{archived['seconds']:.0f}s, peak RSS {archived['rss']:.0f} MiB")  # fmt: skip
        print(f"subject index: {spread['subjects']} subjects; objects listing a subject: "
              f"median {spread['median']:.0f}, p90 {spread['p90']:.0f}, max {spread['max']}")  # fmt: skip
        (a, a_months, a_rows), (b, b_months, b_rows) = pick_subjects(stack)
        print(f"subjects: A with {a_rows} archived orders in {a_months} months, "
              f"B with {b_rows} in {b_months}")  # fmt: skip
        print()
        glacier = run_child(state_dir, "erase", "--subject", a)
        report_erasure("1. hard delete of A, objects in GLACIER", glacier)
        restored = run_child(state_dir, "restore")
        print(f"2. restore of all {restored['objects']} objects: {restored['readable']} "
              f"readable after {restored['seconds']:.1f} s (moto restores at once)")  # fmt: skip
        pending = run_child(state_dir, "pending")
        print(f"3. rewrite_pending (the daily rewrite after a restore): {pending['counts']} in "
              f"{pending['seconds']:.2f} s, {pending['rows_rewritten']} rows of A erased, "
              f"{mib(pending['bytes_read']):.1f} MiB read, "
              f"{mib(pending['bytes_written']):.1f} MiB written, "
              f"peak RSS {pending['rss']:.0f} MiB")  # fmt: skip
        report_touch(pending, f"A's {pending['objects_pending']} planned objects")
        again = run_child(state_dir, "restore")
        print(f"   restore again (a rewritten object goes back to GLACIER): {again['readable']} "
              f"of {again['objects']} readable")  # fmt: skip
        naive = run_child(state_dir, "naive", "--subject", b)
        readable = run_child(state_dir, "erase", "--subject", b)
        same = naive["objects_found"] == readable["listed_keys"]
        print(f"4. naive scan for B: {naive['objects_scanned']} objects of the table with the "
              f"subject column ({naive['objects_skipped']} objects without it left out), "
              f"{mib(naive['bytes_downloaded']):.1f} MiB downloaded and filtered in "
              f"{naive['seconds']:.2f} s, peak RSS {naive['rss']:.0f} MiB; found "
              f"{len(naive['objects_found'])} objects with {naive['rows_found']} rows: "
              f"{'the same objects' if same else 'NOT the objects'} the subject index lists")  # fmt: skip
        report_erasure("5. hard delete of B, objects readable (restored)", readable)
        run_child(state_dir, "restore")
        check = run_child(state_dir, "naive", "--subject", f"{a},{b}")
        print(f"6. check: after restoring every object again, a scan finds {check['rows_found']} "
              f"rows of A or B in {len(check['objects_found'])} objects "
              f"({'erased' if not check['rows_found'] else 'NOT ERASED'})")  # fmt: skip
        print()
        header = ("erasure of one subject", "seconds", "headed", "downloaded", "written",
                  "peak RSS")  # fmt: skip
        print(f"{header[0]:44} {header[1]:>8} {header[2]:>7} {header[3]:>11} {header[4]:>8} "
              f"{header[5]:>9}")  # fmt: skip
        table = [
            ("ours, GLACIER: hard delete, every store", glacier["seconds"], glacier),
            ("ours, GLACIER: archive eraser", glacier["eraser_seconds"]["archive"], None),
            ("ours, after restore: rewrite_pending", pending["seconds"], pending),
            ("ours, readable: hard delete, every store", readable["seconds"], readable),
            ("ours, readable: archive eraser", readable["eraser_seconds"]["archive"], None),
        ]
        for label, seconds, r in table:
            if r is None:
                print(f"{label:44} {seconds:>8.2f}")
                continue
            print(f"{label:44} {seconds:>8.2f} {r['keys_headed']:>7} {r['keys_downloaded']:>11} "
                  f"{r['keys_written']:>8} {r['rss']:>5.0f} MiB")  # fmt: skip
        print(f"{'naive: find only (download + filter)':44} {naive['seconds']:>8.2f} {0:>7} "
              f"{naive['objects_scanned']:>11} {0:>8} {naive['rss']:>5.0f} MiB")  # fmt: skip
        print()
        rewrites = readable["objects_rewritten"]
        archive_s = readable["eraser_seconds"]["archive"]
        listing = readable["s3_seconds_by_operation"].get("ListObjectVersions", 0.0)
        print(f"rewrite: {archive_s / max(1, rewrites):.2f} s per rewritten object "
              f"({mib(readable['bytes_read']) / max(1, rewrites):.1f} MiB each; rewrite_pending "
              f"{pending['seconds'] / max(1, pending['objects_rewritten']):.2f} s), "
              f"{(archive_s - listing) / max(1, rewrites):.2f} s without ListObjectVersions "
              f"({listing:.1f} s in all: moto deep-copies every version of the bucket on each "
              "call, S3 lists by prefix)")  # fmt: skip
        print(f"find: ours (subject index) / naive scan = "
              f"{readable['lookup_seconds'] / naive['seconds']:.5f}x "
              f"({readable['lookup_seconds'] * 1000:.1f} ms vs {naive['seconds']:.2f} s)")  # fmt: skip
        print(f"GLACIER: ours archive eraser / naive find = "
              f"{glacier['eraser_seconds']['archive'] / naive['seconds']:.3f}x, and ours needs "
              f"no restore, the naive scan {naive['objects_scanned']} (hours on GLACIER)")  # fmt: skip
        print(f"readable: ours archive eraser / (naive find + the same rewrites) = "
              f"{archive_s / (naive['seconds'] + archive_s):.3f}x; objects downloaded "
              f"{readable['keys_downloaded']} / {naive['objects_scanned']}; objects in the "
              f"archive {readable['objects_total']}")  # fmt: skip
        print(f"at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs")
    finally:
        stack.down()


if __name__ == "__main__":
    main()

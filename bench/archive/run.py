"""Benchmark: monthly archival against the raw COPY limit, dlt, and pandas + awswrangler.

Seeds a throw-away embedded stack with ORDERS orders (default 5M) over MONTHS months (default 24)
with their items, then moves the rows of one month and of the whole range (orders and
order_items) with each tool, every measurement in its own process so that peak RSS is its own:

- raw:   `COPY (SELECT ...) TO STDOUT (FORMAT BINARY)` of the same rows, bytes discarded;
- raw-join: the same, with the items selected only through the join on their orders' month
         (PostgreSQL then scans every item each month; the query of the earlier bench runs);
- ours:  MonthArchiver, month by month: extract, zstd Parquet, per-subject AES-GCM of personal
         columns, upload (GLACIER, SSE-KMS, SHA-256), GX verification, manifest;
- dlt:   sql_table (pyarrow and connectorx backends) into Parquet on the same S3 (filesystem);
- wr:    pandas.read_sql then awswrangler.s3.to_parquet, month by month.

    .venv/bin/python bench/archive/run.py [--orders N] [--months M] [--state-dir DIR]

Prints seconds, rows/s and peak RSS per tool and scope, then the ratios. Our peak RSS is also
shown above our idle baseline: a process that has imported Dagster, Great Expectations and
pandas and built the resources, before any row moves (`ours-idle`). --state-dir reuses a
seeded stack between invocations (it is seeded when empty).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import psycopg

from lifecycle_pipelines.local.seed import ShopSize, seed_shop
from lifecycle_pipelines.local.stack import LocalStack

AS_OF = date(2026, 11, 25)
ORDERS_QUERY = "SELECT * FROM orders WHERE created_at >= '{s}' AND created_at < '{e}'"
# Every tool selects a month's items the way the archiver does: through the join on their
# orders' month, plus the (redundant) bounds of those orders' keys, so that PostgreSQL reads the
# month's items through the order_id index instead of scanning every item. The bounds are
# looked up first (through the time index; part of each tool's timed work).
BOUNDS_QUERY = (
    "SELECT min(k), max(k) FROM (SELECT order_id AS k FROM orders"
    " WHERE created_at >= '{s}' AND created_at < '{e}' OFFSET 0) AS q"
)
JOIN_ITEMS_QUERY = (
    "SELECT i.* FROM order_items i JOIN orders o ON i.order_id = o.order_id"
    " WHERE o.created_at >= '{s}' AND o.created_at < '{e}'"
)
ITEMS_QUERY = JOIN_ITEMS_QUERY + " AND i.order_id BETWEEN {lo} AND {hi}"


def order_bounds(conn: psycopg.Connection[Any], start: date, end: date) -> tuple[int, int]:
    """The lowest and highest order key of [start, end) (0, -1 when there is none)."""
    row = conn.execute(BOUNDS_QUERY.format(s=start, e=end)).fetchone()
    return (row[0], row[1]) if row and row[0] is not None else (0, -1)


def month_queries(conn: psycopg.Connection[Any], month: date, *, bounded: bool = True) -> list[str]:
    """The orders and items queries of one month."""
    end = next_month(month)
    if not bounded:
        return [ORDERS_QUERY.format(s=month, e=end), JOIN_ITEMS_QUERY.format(s=month, e=end)]
    lo, hi = order_bounds(conn, month, end)
    return [ORDERS_QUERY.format(s=month, e=end), ITEMS_QUERY.format(s=month, e=end, lo=lo, hi=hi)]


def months_of(months: int) -> list[date]:
    """The complete months of the seeded range, oldest first (the partial current month out)."""
    result = []
    year, month = AS_OF.year, AS_OF.month
    for _ in range(months):
        month -= 1
        if month == 0:
            year, month = year - 1, 12
        result.append(date(year, month, 1))
    return sorted(result)


def next_month(day: date) -> date:
    return date(day.year + day.month // 12, day.month % 12 + 1, 1)


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM; ru_maxrss would include the pre-exec parent image)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- one measurement per process -------------------------------------------------------
def measure_raw(stack: LocalStack, scope: list[date], *, bounded: bool) -> tuple[int, float]:
    rows, seconds = 0, 0.0
    with psycopg.connect(stack.app_conninfo()) as conn:
        for month in scope:
            started = time.perf_counter()
            queries = month_queries(conn, month, bounded=bounded)
            seconds += time.perf_counter() - started
            for text in queries:
                started = time.perf_counter()
                with conn.cursor().copy(f"COPY ({text}) TO STDOUT (FORMAT BINARY)") as copy:
                    for _ in copy:
                        pass
                seconds += time.perf_counter() - started
                count = conn.execute(f"SELECT count(*) FROM ({text}) q").fetchone()
                rows += count[0] if count else 0
    return rows, seconds


def measure_ours(stack: LocalStack, scope: list[date]) -> int:
    import dagster as dg

    from lifecycle_pipelines.archive.archiver import MonthArchiver
    from lifecycle_pipelines.archive.plan import ArchiveMonth
    from lifecycle_pipelines.control import ensure_control_schema
    from lifecycle_pipelines.environments import resources_for
    from lifecycle_pipelines.policy import load_policy

    policy = load_policy().get("orders")
    with psycopg.connect(stack.app_conninfo("lifecycle"), autocommit=True) as conn:
        ensure_control_schema(conn)
        conn.execute(
            "TRUNCATE lifecycle.subject_index, lifecycle.archive_objects,"
            " lifecycle.archive_partitions, lifecycle.subject_keys,"
            " lifecycle.key_encryption_keys CASCADE"
        )
    rows = 0
    with dg.build_resources(resources_for("local")) as r:
        forget_archived_rounds(r.s3)
        for month in scope:
            result = MonthArchiver(
                data_type="orders",
                policy=policy,
                month=ArchiveMonth("orders", month),
                shop=r.shop_db,
                control=r.control_db,
                s3=r.s3,
            ).run()
            if not result.passed:
                raise RuntimeError(f"verification failed for {month}")
            rows += sum(e.row_count for e in result.objects)
    return rows


def forget_archived_rounds(s3: Any) -> None:
    """The manifest was emptied: remove the verified-round markers (and keys objects) that the
    archive leaves beside its objects, or each month's run would stop, rightly, at S3 knowing a
    round the manifest does not."""
    client = s3.client("s3")
    bucket = s3.bucket("archive")
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="_purge_keys/orders/"
    ):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys})


def measure_dlt(stack: LocalStack, scope: list[date], backend: str) -> int:
    import dlt
    from dlt.sources.sql_database import sql_table
    from sqlalchemy import text

    env = stack.read_env()
    prefix = env["LIFECYCLE_BUCKET_PREFIX"]
    os.environ.update(
        {
            "DESTINATION__FILESYSTEM__BUCKET_URL": f"s3://{prefix}-staging/bench-dlt-{backend}",
            "DESTINATION__FILESYSTEM__CREDENTIALS__AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
            "DESTINATION__FILESYSTEM__CREDENTIALS__AWS_SECRET_ACCESS_KEY": env[
                "AWS_SECRET_ACCESS_KEY"
            ],
            "DESTINATION__FILESYSTEM__CREDENTIALS__ENDPOINT_URL": env["AWS_ENDPOINT_URL"],
            "DESTINATION__FILESYSTEM__CREDENTIALS__REGION_NAME": env["AWS_REGION"],
            "RUNTIME__LOG_LEVEL": "WARNING",
        }
    )
    parts = dict(item.split("=", 1) for item in stack.app_conninfo().split())
    url = (
        f"postgresql://{parts['user']}:{parts['password']}@{parts['host']}:{parts['port']}/"
        f"{parts['dbname']}"
    )
    start, end = scope[0], next_month(scope[-1])
    with psycopg.connect(stack.app_conninfo()) as conn:
        lo, hi = order_bounds(conn, start, end)

    def orders_window(query: Any, table: Any) -> Any:
        return query.where(table.c.created_at >= start).where(table.c.created_at < end)

    def items_window(query: Any, table: Any) -> Any:
        return query.where(
            text(
                "order_id BETWEEN :lo AND :hi AND order_id IN (SELECT order_id FROM orders"
                " WHERE created_at >= :s AND created_at < :e)"
            ).bindparams(lo=lo, hi=hi, s=start, e=end)
        )

    orders = sql_table(
        credentials=url, table="orders", backend=backend, chunk_size=100_000,
        query_adapter_callback=orders_window,
    )  # fmt: skip
    items = sql_table(
        credentials=url, table="order_items", backend=backend, chunk_size=100_000,
        query_adapter_callback=items_window,
    )  # fmt: skip
    pipeline = dlt.pipeline(
        pipeline_name=f"bench_archive_{backend}",
        destination="filesystem",
        dataset_name="archive",
        pipelines_dir=tempfile.mkdtemp(prefix="dlt-"),
    )
    info = pipeline.run([orders, items], loader_file_format="parquet")
    info.raise_on_failed_jobs()
    counts = pipeline.last_trace.last_normalize_info.row_counts
    return sum(v for k, v in counts.items() if not k.startswith("_dlt"))


def measure_wrangler(stack: LocalStack, scope: list[date]) -> int:
    import awswrangler as wr
    import pandas as pd

    env = stack.read_env()
    os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
    wr.config.s3_endpoint_url = env["AWS_ENDPOINT_URL"]
    bucket = f"{env['LIFECYCLE_BUCKET_PREFIX']}-staging"
    rows = 0
    with psycopg.connect(stack.app_conninfo()) as conn:
        for month in scope:
            for name, query in zip(
                ("orders", "order_items"), month_queries(conn, month), strict=True
            ):
                frame = pd.read_sql(query, conn)
                wr.s3.to_parquet(
                    frame,
                    path=f"s3://{bucket}/bench-wr/{name}/{month:%Y-%m}.parquet",
                    compression="zstd",
                )
                rows += len(frame)
    return rows


def measure_idle(stack: LocalStack) -> int:
    """Import and warm up what our archival needs, build the resources, move no row."""
    import dagster as dg

    from lifecycle_pipelines.archive.archiver import MonthArchiver  # noqa: F401
    from lifecycle_pipelines.archive.verify import warm_up
    from lifecycle_pipelines.environments import resources_for

    warm_up()
    with dg.build_resources(resources_for("local")) as r:
        r.s3.client("s3")
        r.s3.client("kms")
        r.shop_db.connect().close()
    return 0


def child(args: argparse.Namespace) -> None:
    stack = LocalStack(Path(args.state_dir))
    os.environ.update(stack.read_env())
    all_months = months_of(args.months)
    scope = [all_months[len(all_months) // 2]] if args.scope == "month" else all_months
    started = time.perf_counter()
    if args.tool in ("raw", "raw-join"):
        rows, seconds = measure_raw(stack, scope, bounded=args.tool == "raw")
    elif args.tool == "ours":
        rows = measure_ours(stack, scope)
    elif args.tool == "ours-idle":
        rows = measure_idle(stack)
    elif args.tool.startswith("dlt-"):
        rows = measure_dlt(stack, scope, args.tool.removeprefix("dlt-"))
    else:
        rows = measure_wrangler(stack, scope)
    if not args.tool.startswith("raw"):
        seconds = time.perf_counter() - started
    sys.stdout.write(json.dumps({"rows": rows, "seconds": seconds, "rss": peak_rss_mib()}) + "\n")


# -- the driver ------------------------------------------------------------------------
def seed(stack: LocalStack, orders: int, months: int) -> None:
    stack.up(fresh=True)
    size = ShopSize(
        users=max(1_000, orders // 25),
        products=max(1_000, orders // 200),
        orders=orders,
        months=months,
        activity_per_order=0.0,
        as_of=AS_OF,
    )
    with psycopg.connect(stack.app_conninfo()) as conn:
        report = seed_shop(conn, replace(size))
    (stack.state_dir / "bench-seeded.json").write_text(json.dumps(report.rows))


def run_child(state_dir: Path, tool: str, scope: str, months: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", tool, scope, "--state-dir", str(state_dir),
         "--months", str(months)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=5_000_000)
    parser.add_argument("--months", type=int, default=24)
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument(
        "--tools", default="raw,raw-join,ours-idle,ours,dlt-pyarrow,dlt-connectorx,wr"
    )
    parser.add_argument("--child", nargs=2, metavar=("TOOL", "SCOPE"))
    args = parser.parse_args()
    if args.child:
        args.tool, args.scope = args.child
        child(args)
        return
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="bench-archive-"))
    stack = LocalStack(state_dir)
    try:
        if not (state_dir / "bench-seeded.json").exists():
            started = time.perf_counter()
            seed(stack, args.orders, args.months)
            print(f"seeded {args.orders} orders over {args.months} months in "
                  f"{time.perf_counter() - started:.0f}s")  # fmt: skip
        else:
            stack.up()
        results: dict[tuple[str, str], dict[str, float]] = {}
        print(f"{'tool':16} {'scope':6} {'rows':>11} {'seconds':>9} {'rows/s':>10} {'peak RSS':>9}")
        for scope in ("month", "range"):
            for tool in args.tools.split(","):
                try:
                    r = run_child(state_dir, tool, scope, args.months)
                except subprocess.CalledProcessError as err:
                    print(f"{tool:16} {scope:6} failed: {err.stderr.strip().splitlines()[-1:]}")
                    continue
                results[(tool, scope)] = r
                rate = r["rows"] / r["seconds"] if r["rows"] else 0.0
                print(f"{tool:16} {scope:6} {int(r['rows']):>11,} {r['seconds']:>9.2f} "
                      f"{rate:>10,.0f} {r['rss']:>7.0f} MiB")  # fmt: skip
        print()
        for scope in ("month", "range"):
            ours, raw = results.get(("ours", scope)), results.get(("raw", scope))
            if not ours or not raw:
                continue
            throughput = ours["rows"] / ours["seconds"]
            line = f"{scope}: ours/raw COPY = {throughput / (raw['rows'] / raw['seconds']):.2f}x"
            join = results.get(("raw-join", scope))
            if join:
                line += f" (/raw COPY of the join-only query = {throughput / (join['rows'] / join['seconds']):.2f}x)"
            peers = [t for t in results if t[1] == scope and not t[0].startswith(("ours", "raw"))]
            best = max(
                peers, key=lambda t: results[t]["rows"] / results[t]["seconds"], default=None
            )
            if best:
                peer = results[best]["rows"] / results[best]["seconds"]
                line += f"; ours/best peer ({best[0]}) = {throughput / peer:.2f}x"
            idle = results.get(("ours-idle", scope))
            above = f" ({ours['rss'] - idle['rss']:.0f} MiB above idle)" if idle else ""
            print(line + f"; our peak RSS {ours['rss']:.0f} MiB{above}")
        print(f"at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} CPUs")
    finally:
        stack.down()


if __name__ == "__main__":
    main()

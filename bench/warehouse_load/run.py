"""Benchmark: one hourly warehouse load of ORDERS order rows (default 1M), against the raw
limit of COPY FROM STDIN and against pandas + awswrangler `postgresql.to_sql`, in one run.

Seeds a stack, stamps every order with the same past hour (the update trigger is disabled for
that, then the table is vacuumed), then, each in its own process and into an emptied warehouse:
- raw:        COPY FROM STDIN of the same rows' CSV (extracted beforehand, untimed) into a bare
              table (no key, no index): the limit the 0.5x target is set against;
- raw-keyed:  the same COPY into a table with the order id as its primary key, as every
              warehouse fact table has (for information: the key's upkeep is a cost no load
              into the star schema can avoid);
- ours:       HourLoader for that hour: extract in one snapshot, HMAC user keys, Parquet staged
              on S3, binary COPY straight into the target (the warehouse is empty: no MERGE
              needed), the GX reconciliation check inside the transaction (as the asset runs
              it; GX imported beforehand), commit;
- ours-mixed: the same hour into a warehouse that holds older versions of its 10% lowest keys
              (as an hour of new orders plus changes to older ones): the new keys are
              INSERTed, the changed rows MERGEd;
- ours-rerun: the same hour loaded again (every row matched; nothing changes);
- wr:         pandas.read_sql of the same rows, then awswrangler.postgresql.to_sql (pg8000).

    .venv/bin/python bench/warehouse_load/run.py [--orders N] [--state-dir DIR] [--tools ...]
        [--rounds N]

Prints seconds, rows/s, peak RSS and CPU seconds (the tool's process with its children, the
whole PostgreSQL cluster, the moto server) per tool, our load's phases, then the ratios. The
machine has 2 cores: CPU seconds show where the time goes when the wall clock is shared. Every
tool's timed part starts after a CHECKPOINT (untimed). A virtual machine's speed drifts from
minute to minute: `--rounds N` runs the tools N times round-robin, takes each ratio within its
round and prints the medians. --state-dir reuses a seeded stack between invocations (it is
seeded when empty); without it a throw-away stack is used.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from lifecycle_pipelines.local.seed import ShopSize, seed_shop
from lifecycle_pipelines.local.stack import LocalStack

HOUR = datetime(2026, 11, 20, 9, tzinfo=UTC)
QUERY = "SELECT * FROM orders WHERE updated_at >= '{s}' AND updated_at < '{e}'"
TOOLS = ("raw", "raw-keyed", "ours", "ours-mixed", "ours-rerun", "wr")
MIXED_EXISTING = 0.10  # ours-mixed: the share of the hour's keys the warehouse already holds


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cluster_cpu_seconds(state_dir: Path) -> float:
    """CPU seconds of the whole PostgreSQL cluster so far: the postmaster, its live children
    (backends, also those of psql children) and, through cutime, the children it has reaped."""
    tick = os.sysconf("SC_CLK_TCK")
    postmaster = int((state_dir / "postgres" / "pgdata" / "postmaster.pid").read_text().split()[0])
    fields = _stat(postmaster)
    total = sum(int(fields[i]) for i in (11, 12, 13, 14))
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                child = _stat(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(child[1]) == postmaster:
                total += int(child[11]) + int(child[12])
    return total / tick


def moto_cpu_seconds(state_dir: Path) -> float:
    fields = _stat(int((state_dir / "moto.pid").read_text().split()[0]))
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / os.sysconf("SC_CLK_TCK")


class CpuClock:
    """CPU seconds spent since creation: this process (with children such as psql), the
    PostgreSQL cluster and the moto server."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.start = self._now()

    def _now(self) -> tuple[float, float, float]:
        times = os.times()
        own = times.user + times.system + times.children_user + times.children_system
        return own, cluster_cpu_seconds(self.state_dir), moto_cpu_seconds(self.state_dir)

    def spent(self) -> dict[str, float]:
        now = self._now()
        names = ("python", "postgres", "moto")
        return {n: round(b - a, 2) for n, a, b in zip(names, self.start, now, strict=True)}


def scalar(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> Any:
    """The first column of the query's one row."""
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def settle(stack: LocalStack) -> None:
    """Untimed, right before a tool's timed part: a CHECKPOINT, so that no tool pays for
    writing out the dirty buffers of the one before it."""
    with psycopg.connect(stack.postgres.start().conninfo(), autocommit=True) as admin:
        admin.execute("CHECKPOINT")


def reset_warehouse(stack: LocalStack) -> None:
    with psycopg.connect(stack.app_conninfo("warehouse"), autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS analytics CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS bench CASCADE")
        conn.execute("CREATE SCHEMA bench")


def measure(tool: str, state_dir: Path) -> dict[str, Any]:
    stack = LocalStack(state_dir)
    os.environ.update(stack.read_env())
    reset_warehouse(stack)
    query = QUERY.format(s=HOUR, e=HOUR + timedelta(hours=1))
    extra: dict[str, Any] = {}
    if tool in ("raw", "raw-keyed"):
        with psycopg.connect(stack.app_conninfo()) as shop:
            buffer = io.BytesIO()
            with shop.cursor().copy(f"COPY ({query}) TO STDOUT (FORMAT csv)") as copy:
                for chunk in copy:
                    buffer.write(chunk)
        with psycopg.connect(stack.app_conninfo("warehouse")) as wh:
            with psycopg.connect(stack.app_conninfo()) as shop:
                ddl = scalar(
                    shop,
                    "SELECT string_agg(quote_ident(attname) || ' ' || format_type(atttypid,"
                    " atttypmod), ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid ="
                    " 'orders'::regclass AND attnum > 0 AND NOT attisdropped",
                )
            key = ", PRIMARY KEY (order_id)" if tool == "raw-keyed" else ""
            wh.execute(f"CREATE TABLE bench.raw_orders ({ddl}{key})")
            wh.commit()
            settle(stack)
            clock = CpuClock(state_dir)
            started = time.perf_counter()
            with wh.cursor().copy("COPY bench.raw_orders FROM STDIN (FORMAT csv)") as copy:
                copy.write(buffer.getvalue())
            wh.commit()
            seconds = time.perf_counter() - started
            extra["cpu"] = clock.spent()
            rows = scalar(wh, "SELECT count(*) FROM bench.raw_orders")
    elif tool in ("ours", "ours-mixed", "ours-rerun"):
        import dagster as dg

        from lifecycle_pipelines.archive.verify import warm_up
        from lifecycle_pipelines.environments import resources_for
        from lifecycle_pipelines.warehouse.loader import HourLoader
        from lifecycle_pipelines.warehouse.quality import check_hour

        with (
            dg.build_resources(resources_for("local")) as r,
            psycopg.connect(stack.app_conninfo(), autocommit=True) as shop,
            psycopg.connect(stack.app_conninfo("warehouse")) as wh,
        ):
            # the reconciliation runs inside the load's transaction, as in the asset; GX is
            # imported first (a run's first validation pays ~2 s of imports, untimed here)
            warm_up()
            loader = HourLoader(
                shop=shop, warehouse=wh, engine="postgres", schema="analytics", s3=r.s3,
                pseudonym_key=r.warehouse.pseudonym_key(), safety_lag=timedelta(0),
                reconcile=check_hour,
            )  # fmt: skip
            if tool != "ours":  # untimed: the hour is in the warehouse already
                loader.run(HOUR)
            if tool == "ours-mixed":
                keep_older_versions_of_lowest_keys(wh)
            settle(stack)
            clock = CpuClock(state_dir)
            started = time.perf_counter()
            load = loader.run(HOUR)
            seconds = time.perf_counter() - started
            extra["cpu"] = clock.spent()
            extra["phases"] = {k: round(v, 3) for k, v in load.phases.items()}
            rows = next(t.rows for t in load.tables if t.table.name == "fact_orders")
            extra["rss_load"] = peak_rss_mib()
            extra["check_seconds"] = load.phases.get("reconcile", 0.0)  # inside `seconds`
            extra["check_passed"] = load.reconciliation is not None and load.reconciliation.success
    else:
        import awswrangler as wr
        import pandas as pd
        import pg8000

        parts = dict(item.split("=", 1) for item in stack.app_conninfo("warehouse").split())
        with psycopg.connect(stack.app_conninfo()) as shop:
            settle(stack)
            clock = CpuClock(state_dir)
            started = time.perf_counter()
            frame = pd.read_sql(query, shop)
        con = pg8000.connect(
            user=parts["user"], password=parts["password"], host=parts["host"],
            port=int(parts["port"]), database=parts["dbname"],
        )  # fmt: skip
        empty = {c: "TEXT" for c in frame.columns if frame[c].isna().all()}
        wr.postgresql.to_sql(frame, con, table="wr_orders", schema="bench", mode="overwrite",
                             use_column_names=True, chunksize=3_000, dtype=empty)  # fmt: skip
        seconds = time.perf_counter() - started
        extra["cpu"] = clock.spent()
        rows = len(frame)
        con.close()
    return {"rows": rows, "seconds": seconds, "rss": peak_rss_mib(), **extra}


def keep_older_versions_of_lowest_keys(wh: psycopg.Connection[Any]) -> None:
    """Leave in fact_orders only the hour's lowest MIXED_EXISTING keys, each an older version
    with another status (so the next load updates every one of them), vacuumed and analysed."""
    cut = scalar(
        wh,
        "SELECT percentile_disc(%s) WITHIN GROUP (ORDER BY order_id) FROM analytics.fact_orders",
        (MIXED_EXISTING,),
    )
    wh.execute("DELETE FROM analytics.fact_orders WHERE order_id > %s", (cut,))
    wh.execute(
        "UPDATE analytics.fact_orders SET status = 'pending', updated_at = updated_at - interval '1 day'"
    )
    wh.commit()
    wh.autocommit = True
    wh.execute("VACUUM ANALYZE analytics.fact_orders")
    wh.autocommit = False


def start_seeded(stack: LocalStack, orders: int) -> None:
    """Start the stack; seed and stamp it unless it already holds this many orders."""
    marker = stack.state_dir / "bench-warehouse-seeded.json"
    if marker.exists() and json.loads(marker.read_text()).get("orders") == orders:
        stack.up()
        return
    stack.up(fresh=True)
    with psycopg.connect(stack.app_conninfo()) as conn:
        seed_shop(conn, ShopSize(users=orders // 20, orders=orders, activity_per_order=0.0))
        conn.execute("ALTER TABLE orders DISABLE TRIGGER orders_set_updated_at")
        conn.execute("UPDATE orders SET updated_at = %s", (HOUR + timedelta(minutes=7),))
        conn.execute("ALTER TABLE orders ENABLE TRIGGER orders_set_updated_at")
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE orders")  # no dead row versions left by the stamping
    marker.write_text(json.dumps({"orders": orders}))


def run_round(tools: list[str], state_dir: Path) -> dict[str, float]:
    """Each tool once, each in its own process; prints their figures and returns the ratios
    of this round."""
    results = {}
    for tool in tools:
        out = subprocess.run(
            [sys.executable, __file__, "--child", tool, str(state_dir)],
            check=False, capture_output=True, text=True,
        )  # fmt: skip
        if out.returncode != 0:
            print(f"{tool:10} failed: {out.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        results[tool] = r
        cpu = " ".join(f"{k} {v:.2f}" for k, v in r.get("cpu", {}).items())
        print(f"{tool:10} {int(r['rows']):>10,} rows {r['seconds']:8.2f} s "
              f"{r['rows'] / r['seconds']:>10,.0f} rows/s  peak RSS {r['rss']:.0f} MiB"
              f"  CPU s: {cpu or '-'}")  # fmt: skip
        if "phases" in r:
            print(f"{'':10} phases: {r['phases']}")
            print(f"{'':10} peak RSS {r['rss_load']:.0f} MiB; GX reconciliation "
                  f"before commit: {r['check_seconds']:.2f} s (included), "
                  f"passed={r['check_passed']}")  # fmt: skip
    rate = {k: v["rows"] / v["seconds"] for k, v in results.items()}
    ratios = {}
    for tool in ("ours", "ours-mixed", "ours-rerun"):
        if tool in rate and "raw" in rate:
            ratios[f"{tool}/raw COPY"] = rate[tool] / rate["raw"]
        if tool in rate and "raw-keyed" in rate:
            ratios[f"{tool}/raw COPY into a keyed table"] = rate[tool] / rate["raw-keyed"]
    if "ours" in rate and "wr" in rate:
        ratios["ours/awswrangler"] = rate["ours"] / rate["wr"]
    for name, ratio in ratios.items():
        target = " (target 0.5x)" if name.endswith("raw COPY") else ""
        print(f"{name} = {ratio:.2f}x{target}")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--tools", default=",".join(TOOLS))
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="run the tools this many times, round-robin; ratios are taken within each round",
    )  # fmt: skip
    parser.add_argument("--child", nargs=2)
    args = parser.parse_args()
    if args.child:
        sys.stdout.write(json.dumps(measure(args.child[0], Path(args.child[1]))) + "\n")
        return
    tools = [t for t in args.tools.split(",") if t]
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown:
        parser.error(f"--tools: unknown {unknown}; choose from {list(TOOLS)}")
    keep = args.state_dir is not None
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="bench-warehouse-"))
    stack = LocalStack(state_dir)
    try:
        start_seeded(stack, args.orders)
        ratios: dict[str, list[float]] = {}
        for round_number in range(1, args.rounds + 1):
            if args.rounds > 1:
                print(f"round {round_number}")
            for name, ratio in run_round(tools, stack.state_dir).items():
                ratios.setdefault(name, []).append(ratio)
        if args.rounds > 1:
            for name, values in ratios.items():
                listed = ", ".join(f"{v:.2f}" for v in values)
                print(f"{name}: median {statistics.median(values):.2f}x ({listed})")
    finally:
        stack.down()
        if not keep:
            import shutil

            shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

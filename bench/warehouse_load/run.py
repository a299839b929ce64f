"""Benchmark: one hourly warehouse load of ORDERS order rows (default 1M), against the raw
limit of COPY FROM STDIN and against pandas + awswrangler `postgresql.to_sql`, in one run.

Seeds a throw-away stack, stamps every order with the same past hour (the update trigger is
disabled for that), then, each in its own process:
- ours:  HourLoader for that hour (extract, HMAC user keys, Parquet staged on S3, COPY into a
         stage, drop stale, MERGE, reconciliation figures) into an empty warehouse;
- raw:   COPY FROM STDIN of the same rows' CSV (already extracted, untimed) into a bare table;
- wr:    pandas.read_sql of the same rows, then awswrangler.postgresql.to_sql (pg8000).

    .venv/bin/python bench/warehouse_load/run.py [--orders N]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from lifecycle_pipelines.local.seed import ShopSize, seed_shop
from lifecycle_pipelines.local.stack import LocalStack

HOUR = datetime(2026, 11, 20, 9, tzinfo=UTC)
QUERY = "SELECT * FROM orders WHERE updated_at >= '{s}' AND updated_at < '{e}'"


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_warehouse(stack: LocalStack) -> None:
    with psycopg.connect(stack.app_conninfo("warehouse"), autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS analytics CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS bench CASCADE")
        conn.execute("CREATE SCHEMA bench")


def measure(tool: str, state_dir: Path) -> dict[str, float]:
    import os

    stack = LocalStack(state_dir)
    os.environ.update(stack.read_env())
    reset_warehouse(stack)
    query = QUERY.format(s=HOUR, e=HOUR + timedelta(hours=1))
    if tool == "raw":
        with psycopg.connect(stack.app_conninfo()) as shop:
            buffer = io.BytesIO()
            with shop.cursor().copy(f"COPY ({query}) TO STDOUT (FORMAT csv)") as copy:
                for chunk in copy:
                    buffer.write(chunk)
        with psycopg.connect(stack.app_conninfo("warehouse")) as wh:
            with psycopg.connect(stack.app_conninfo()) as shop:
                ddl = shop.execute(
                    "SELECT string_agg(quote_ident(attname) || ' ' || format_type(atttypid,"
                    " atttypmod), ', ' ORDER BY attnum) FROM pg_attribute WHERE attrelid ="
                    " 'orders'::regclass AND attnum > 0 AND NOT attisdropped"
                ).fetchone()[0]
            wh.execute(f"CREATE TABLE bench.raw_orders ({ddl})")
            wh.commit()
            started = time.perf_counter()
            with wh.cursor().copy("COPY bench.raw_orders FROM STDIN (FORMAT csv)") as copy:
                copy.write(buffer.getvalue())
            wh.commit()
            seconds = time.perf_counter() - started
            rows = wh.execute("SELECT count(*) FROM bench.raw_orders").fetchone()[0]
    elif tool == "ours":
        import dagster as dg

        from lifecycle_pipelines.environments import resources_for
        from lifecycle_pipelines.warehouse.loader import HourLoader

        with (
            dg.build_resources(resources_for("local")) as r,
            psycopg.connect(stack.app_conninfo(), autocommit=True) as shop,
            psycopg.connect(stack.app_conninfo("warehouse")) as wh,
        ):
            started = time.perf_counter()
            load = HourLoader(
                shop=shop, warehouse=wh, engine="postgres", schema="analytics", s3=r.s3,
                pseudonym_key=r.warehouse.pseudonym_key(), safety_lag=timedelta(0),
            ).run(HOUR)  # fmt: skip
            seconds = time.perf_counter() - started
            rows = next(t.rows for t in load.tables if t.table.name == "fact_orders")
    else:
        import awswrangler as wr
        import pandas as pd
        import pg8000

        parts = dict(item.split("=", 1) for item in stack.app_conninfo("warehouse").split())
        with psycopg.connect(stack.app_conninfo()) as shop:
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
        rows = len(frame)
        con.close()
    return {"rows": rows, "seconds": seconds, "rss": peak_rss_mib()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--child", nargs=2)
    args = parser.parse_args()
    if args.child:
        sys.stdout.write(json.dumps(measure(args.child[0], Path(args.child[1]))) + "\n")
        return
    with tempfile.TemporaryDirectory(prefix="bench-warehouse-") as tmp:
        stack = LocalStack(Path(tmp))
        stack.up(fresh=True)
        try:
            with psycopg.connect(stack.app_conninfo()) as conn:
                seed_shop(conn, ShopSize(users=args.orders // 20, orders=args.orders,
                                         activity_per_order=0.0))  # fmt: skip
                conn.execute("ALTER TABLE orders DISABLE TRIGGER orders_set_updated_at")
                conn.execute("UPDATE orders SET updated_at = %s", (HOUR + timedelta(minutes=7),))
                conn.execute("ALTER TABLE orders ENABLE TRIGGER orders_set_updated_at")
            results = {}
            for tool in ("raw", "ours", "wr"):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", tool, str(stack.state_dir)],
                    check=False, capture_output=True, text=True,
                )  # fmt: skip
                if out.returncode != 0:
                    print(f"{tool:5} failed: {out.stderr.strip().splitlines()[-1:]}")
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results[tool] = r
                print(f"{tool:5} {int(r['rows']):>10,} rows {r['seconds']:8.2f} s "
                      f"{r['rows'] / r['seconds']:>10,.0f} rows/s  peak RSS {r['rss']:.0f} MiB")  # fmt: skip
            rate = {k: v["rows"] / v["seconds"] for k, v in results.items()}
            if "ours" in rate and "raw" in rate:
                print(f"ours/raw COPY = {rate['ours'] / rate['raw']:.2f}x (target 0.5x)")
            if "ours" in rate and "wr" in rate:
                print(f"ours/awswrangler = {rate['ours'] / rate['wr']:.2f}x")
        finally:
            stack.down()


if __name__ == "__main__":
    main()

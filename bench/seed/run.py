"""Benchmark: seeding the shop with COPY, against the raw limit of COPY FROM STDIN.

Starts a throw-away embedded stack, generates ORDERS orders (default 1M) with their items,
users and activity events, and loads them through `seed_shop`. Then it replays the same CSV
bytes of orders and order_items straight into COPY FROM STDIN (no generation, no foreign keys)
into fresh tables: the raw limit. Prints seconds, rows/s and the ratio.

    .venv/bin/python bench/seed/run.py [ORDERS]
"""

from __future__ import annotations

import io
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psycopg
import pyarrow.csv as pacsv

from lifecycle_pipelines.local.seed import ShopGenerator, ShopSize, seed_shop
from lifecycle_pipelines.local.stack import LocalStack
from lifecycle_pipelines.resources.postgres import copy_in


def main() -> None:
    orders = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    size = ShopSize(users=orders // 10, products=max(1_000, orders // 100), orders=orders)
    with tempfile.TemporaryDirectory() as tmp:
        stack = LocalStack(Path(tmp))
        stack.up(fresh=True)
        conninfo = stack.app_conninfo()
        try:
            with psycopg.connect(conninfo) as conn:
                started = time.perf_counter()
                report = seed_shop(conn, size)
                seed_seconds = time.perf_counter() - started
            gen = ShopGenerator(replace(size, activity_per_order=0))
            gen.products()
            times, users = gen._order_plan()
            first = np.full(size.users, gen.end_s, dtype=np.int64)
            np.minimum.at(first, users - 1, times)
            addresses = gen.addresses(gen.users(first))
            payloads = []
            for order_chunk, item_chunk in gen.order_chunks(times, users, addresses):
                for name, table in (("raw_orders", order_chunk), ("raw_items", item_chunk)):
                    buffer = io.BytesIO()
                    pacsv.write_csv(table, buffer)
                    payloads.append((name, table.column_names, buffer.getvalue()))
            with psycopg.connect(conninfo) as conn:
                conn.execute("CREATE TABLE raw_orders (LIKE orders INCLUDING DEFAULTS)")
                conn.execute("CREATE TABLE raw_items (LIKE order_items INCLUDING DEFAULTS)")
                conn.commit()
                started = time.perf_counter()
                for name, columns, payload in payloads:
                    copy_in(conn, name, columns, [payload])
                conn.commit()
                raw_seconds = time.perf_counter() - started
        finally:
            stack.down()
    total_rows = sum(report.rows.values())
    order_rows = report.rows["orders"] + report.rows["order_items"]
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"seed: {orders} orders, {total_rows} rows in all tables")
    print(
        f"  lifecycle seed (generate + COPY + FK validation + ANALYZE): {seed_seconds:.1f} s, "
        f"{total_rows / seed_seconds:,.0f} rows/s, peak RSS {peak_mib:,.0f} MiB"
    )
    print(
        f"  raw COPY FROM STDIN of the same orders + items CSV (no generation, no FKs): "
        f"{raw_seconds:.1f} s, {order_rows / raw_seconds:,.0f} rows/s"
    )
    print(
        f"  ratio (our rows/s over all tables / raw COPY rows/s): "
        f"{(total_rows / seed_seconds) / (order_rows / raw_seconds):.2f}"
    )


if __name__ == "__main__":
    main()

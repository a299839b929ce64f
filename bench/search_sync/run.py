"""Benchmark: the product sync into the local search engine (tantivy).

Seeds a throw-away stack with PRODUCTS products (default 1M), then, each in its own process:
- full load: the first run of a month (create the index, load every product, reconcile, swap
  the alias): documents/s and peak RSS;
- one incremental day after 10k products changed and 1k were soft-deleted: seconds.

    .venv/bin/python bench/search_sync/run.py [--products N] [--state-dir DIR]

PGSync users report about 1.4k docs/s; the issue's target is at least 20k docs/s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import psycopg

from lifecycle_pipelines.local.seed import ShopSize, seed_shop
from lifecycle_pipelines.local.stack import LocalStack

DAY = date(2026, 11, 25)


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(state_dir: Path, search_dir: Path) -> None:
    from lifecycle_pipelines.control import ensure_control_schema
    from lifecycle_pipelines.resources.search.tantivy_backend import TantivyBackend
    from lifecycle_pipelines.search_sync.index_config import load_synonyms
    from lifecycle_pipelines.search_sync.sync import ProductSync, SyncSettings

    stack = LocalStack(state_dir)
    with (
        psycopg.connect(stack.app_conninfo(), autocommit=True) as shop,
        psycopg.connect(stack.app_conninfo("lifecycle"), autocommit=True) as control,
    ):
        ensure_control_schema(control)
        sync = ProductSync(
            TantivyBackend(search_dir),
            shop,
            control,
            load_synonyms(),
            SyncSettings(safety_lag=timedelta(0), batch_size=20_000),
        )
        started = time.perf_counter()
        report = sync.run(DAY)
        seconds = time.perf_counter() - started
    result = {
        "seconds": seconds,
        "upserted": report.upserted,
        "deleted": report.soft_deleted + report.hard_deleted,
        "rotated": report.rotated,
        "rss": peak_rss_mib(),
    }
    sys.stdout.write(json.dumps(result) + "\n")


def run_child(state_dir: Path, search_dir: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(state_dir), str(search_dir)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--child", nargs=2)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]))
        return
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        stack = LocalStack(Path(tmp) / "stack")
        stack.up(fresh=True)
        try:
            size = ShopSize(
                users=1_000, products=args.products, orders=1_000, activity_per_order=0.0
            )
            started = time.perf_counter()
            with psycopg.connect(stack.app_conninfo()) as conn:
                seed_shop(conn, size)
            print(f"seeded {args.products:,} products in {time.perf_counter() - started:.0f}s")
            search_dir = Path(tmp) / "search"
            full = run_child(stack.state_dir, search_dir)
            rate = full["upserted"] / full["seconds"]
            print(
                f"full load   {int(full['upserted']):>9,} docs  {full['seconds']:7.1f} s  "
                f"{rate:>9,.0f} docs/s  peak RSS {full['rss']:.0f} MiB  "
                f"(target 20k docs/s: {rate / 20_000:.2f}x; PGSync's reported 1.4k: "
                f"{rate / 1_400:.1f}x)"
            )
            with psycopg.connect(stack.app_conninfo(), autocommit=True) as conn:
                conn.execute(
                    "UPDATE products SET price = price + 1 WHERE product_id IN ("
                    "SELECT product_id FROM products ORDER BY product_id DESC LIMIT 10000)"
                )
                conn.execute(
                    "UPDATE products SET deleted_at = now() WHERE product_id IN ("
                    "SELECT product_id FROM products ORDER BY product_id LIMIT 1000)"
                )
            day = run_child(stack.state_dir, search_dir)
            print(
                f"incremental {int(day['upserted']):>9,} docs changed, {int(day['deleted']):,} "
                f"deleted  {day['seconds']:7.2f} s  peak RSS {day['rss']:.0f} MiB"
            )
            print(f"on {os.cpu_count()} CPUs")
        finally:
            stack.down()


if __name__ == "__main__":
    main()

"""Benchmark: the product sync into the local search engine (tantivy).

Seeds a throw-away stack with PRODUCTS products (default 1M), then, each in its own process:
- full load: the first run of a month (create the index, load every product, reconcile, swap
  the alias): documents/s, CPU seconds and peak RSS (--repeat N loads N times into fresh
  indices, for a machine shared with other work where wall time varies from run to run);
- one incremental day after 10k products changed and 1k were soft-deleted: seconds.

    .venv/bin/python bench/search_sync/run.py [--products N] [--repeat N] [--state-dir DIR]

--state-dir reuses a stack seeded by an earlier run with the same --products (the stack is
left there, stopped); the incremental day's changes then carry over into the next run.
PGSync users report about 1.4k docs/s; the issue's target is at least 20k docs/s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
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
SEEDED = "bench-seeded.json"


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


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
        started, cpu = time.perf_counter(), cpu_seconds()
        report = sync.run(DAY)
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    result = {
        "seconds": seconds,
        "cpu": cpu,
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


def prepare(stack: LocalStack, products: int) -> None:
    """Seed the stack, unless it holds a seed of `products` products already."""
    marker = stack.state_dir / SEEDED
    if marker.exists() and json.loads(marker.read_text()).get("products") == products:
        stack.up()
        print(f"reusing {stack.state_dir}: {products:,} products")
        return
    stack.up(fresh=True)
    size = ShopSize(users=1_000, products=products, orders=1_000, activity_per_order=0.0)
    started = time.perf_counter()
    with psycopg.connect(stack.app_conninfo()) as conn:
        seed_shop(conn, size)
    marker.write_text(json.dumps({"products": products}))
    print(f"seeded {products:,} products in {time.perf_counter() - started:.0f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=1, help="full loads to run")
    parser.add_argument("--state-dir", type=Path, default=None)
    parser.add_argument("--child", nargs=2)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]))
        return
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        stack = LocalStack(args.state_dir or Path(tmp) / "stack")
        prepare(stack, args.products)
        try:
            search_dir = Path(tmp) / "search"
            for _ in range(args.repeat):
                shutil.rmtree(search_dir, ignore_errors=True)
                load = os.getloadavg()[0]
                full = run_child(stack.state_dir, search_dir)
                rate = full["upserted"] / full["seconds"]
                print(
                    f"full load   {int(full['upserted']):>9,} docs  {full['seconds']:7.1f} s  "
                    f"{rate:>9,.0f} docs/s  CPU {full['cpu']:5.1f} s  peak RSS {full['rss']:.0f} "
                    f"MiB  (target 20k docs/s: {rate / 20_000:.2f}x; PGSync's reported 1.4k: "
                    f"{rate / 1_400:.1f}x; load average {load:.1f})"
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
            load = os.getloadavg()[0]
            day = run_child(stack.state_dir, search_dir)
            print(
                f"incremental {int(day['upserted']):>9,} docs changed, {int(day['deleted']):,} "
                f"deleted  {day['seconds']:7.2f} s  CPU {day['cpu']:4.1f} s  peak RSS "
                f"{day['rss']:.0f} MiB  (load average {load:.1f})"
            )
            print(f"on {os.cpu_count()} CPUs")
        finally:
            stack.down()


if __name__ == "__main__":
    main()

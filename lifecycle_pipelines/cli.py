"""The `lifecycle` command: run the embedded stack and inspect the pipelines' configuration.

lifecycle up [--keep] [--users N --products N --orders N --seed S | --no-seed]
lifecycle down
lifecycle dev [--port 3000]   # a fresh seeded stack + the Dagster UI; Ctrl-C stops all
lifecycle seed [--replace] [--users N ...]
lifecycle env                 # the stack's settings as `export` lines
lifecycle policy check [FILE]
lifecycle search "QUERY"      # top hits from the configured search backend
lifecycle erasure submit --user-id ID --requested-by WHO [--dry-run]
lifecycle erasure status [REQUEST]
lifecycle erasure hold (--user-id ID | --s3-uri URI) --reason TEXT --placed-by WHO
lifecycle erasure lift HOLD --lifted-by WHO
lifecycle erasure certificate REQUEST   # the stored certificate (JSON)
lifecycle erasure verify-chain          # every certificate's hash and link
lifecycle erasure replay                # re-apply the ledger after a restore
lifecycle archive query "SQL" # DuckDB over readable archive objects (personal data decrypted
                              # only for subjects whose key exists)
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lifecycle_pipelines.local.seed import ShopSize
from lifecycle_pipelines.local.stack import DEFAULT_STATE_DIR, LocalStack, StackInfo
from lifecycle_pipelines.policy import PolicyError, load_policy

log = logging.getLogger("lifecycle")


def _out(line: str = "") -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _size_args(parser: argparse.ArgumentParser) -> None:
    default = ShopSize()
    parser.add_argument("--users", type=int, default=default.users, help="users to generate")
    parser.add_argument("--products", type=int, default=default.products, help="products")
    parser.add_argument("--orders", type=int, default=default.orders, help="orders over 36 months")
    parser.add_argument("--seed", type=int, default=default.seed, help="random seed")


def _size(args: argparse.Namespace) -> ShopSize:
    today = datetime.now(UTC).date()
    return ShopSize(
        users=args.users, products=args.products, orders=args.orders, seed=args.seed, as_of=today
    )


def seed_stack(stack: LocalStack, size: ShopSize, replace: bool = False) -> dict[str, int]:
    """Seed the running stack's shop database and DynamoDB tables."""
    import boto3
    import psycopg

    from lifecycle_pipelines.local.seed import seed_dynamodb, seed_shop

    env = stack.read_env()
    started = time.monotonic()
    with psycopg.connect(stack.app_conninfo()) as conn:
        report = seed_shop(conn, size, replace=replace)
    dynamodb = boto3.session.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_REGION"],
    ).resource("dynamodb", endpoint_url=env["AWS_ENDPOINT_URL"])
    counts = {**report.rows, **seed_dynamodb(dynamodb, size)}
    counts["search activity documents"] = _seed_activity_search(stack, size)
    log.info("seeded in %.1fs", time.monotonic() - started)
    return counts


def _seed_activity_search(stack: LocalStack, size: ShopSize) -> int:
    """User activity of the last two months in monthly search indices (`users-activity-*`), as
    the platform's services write it, so that erasure has search documents to remove."""
    from pathlib import Path

    import psycopg

    from lifecycle_pipelines.resources.search.tantivy_backend import TantivyBackend
    from lifecycle_pipelines.search_sync.activity import index_activity_month

    backend = TantivyBackend(Path(stack.read_env()["LIFECYCLE_SEARCH_DIR"]))
    month = size.as_of.replace(day=1)
    previous = (month - timedelta(days=1)).replace(day=1)
    with psycopg.connect(stack.app_conninfo()) as conn:
        return sum(index_activity_month(conn, backend, m) for m in (previous, month))


def _print_info(info: StackInfo) -> None:
    _out("Local stack is up (a sandbox: `make dev` starts it fresh and seeded):")
    for line in info.describe():
        _out(f"  {line}")


def cmd_up(args: argparse.Namespace) -> int:
    stack = LocalStack(args.state_dir)
    info, report = stack.up(fresh=not args.keep)
    log.info(
        "bootstrap: %d created, %d already there",
        len(report.created),
        len(report.actions) - len(report.created),
    )
    if not args.no_seed:
        counts = seed_stack(stack, _size(args), replace=args.keep)
        _out("Seeded: " + ", ".join(f"{name} {count}" for name, count in counts.items()))
    _print_info(info)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    LocalStack(args.state_dir).down()
    _out("Local stack stopped.")
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    counts = seed_stack(LocalStack(args.state_dir), _size(args), replace=args.replace)
    _out("Seeded: " + ", ".join(f"{name} {count}" for name, count in counts.items()))
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    for key, value in sorted(LocalStack(args.state_dir).read_env().items()):
        _out(f"export {key}={value}")
    return 0


def cmd_dev(args: argparse.Namespace) -> int:
    from lifecycle_pipelines.local.dev import run_dagster_dev

    stack = LocalStack(args.state_dir)
    started = time.monotonic()
    try:
        info, _ = stack.up(fresh=True)
        counts = seed_stack(stack, _size(args))
    except BaseException:
        stack.down()
        raise
    _out("Seeded: " + ", ".join(f"{name} {count}" for name, count in counts.items()))
    _print_info(info)
    _out(
        f"  Dagster UI  http://{args.host}:{args.port}  (stack ready in "
        f"{time.monotonic() - started:.0f}s; Ctrl-C stops everything)"
    )
    return run_dagster_dev(stack, info.env, args.host, args.port)


def cmd_policy_check(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.file)
    except PolicyError as err:
        sys.stderr.write(f"invalid retention policy:\n{err}\n")
        return 2
    for name, data_type in policy.data_types.items():
        window = data_type.active_window or "-"
        _out(
            f"{name:15} {data_type.store:10} active {window:6} archive "
            f"{data_type.archive_storage_class or '-':12} retention {data_type.retention}"
        )
    return 0


def _stack_resources(args: argparse.Namespace) -> Any:
    """Resources of the current environment, initialised outside a Dagster run (the local
    stack's settings are loaded from its `stack.env` when LIFECYCLE_ENV is local or unset)."""
    import os

    import dagster as dg

    from lifecycle_pipelines.environments import current_environment, resources_for

    env = current_environment()
    if env == "local":
        os.environ.update(LocalStack(args.state_dir).read_env())
    return dg.build_resources(resources_for(env))


def cmd_archive_query(args: argparse.Namespace) -> int:
    from lifecycle_pipelines.archive.query import query_archive

    with _stack_resources(args) as resources:
        result = query_archive(args.sql, s3=resources.s3, control=resources.control_db)
    frame = result.table.to_pandas()
    _out(frame.to_string(index=False, max_rows=args.max_rows) if len(frame) else "(no rows)")
    _out(f"-- {result.table.num_rows} rows from {result.objects_read} archive objects")
    for skipped in result.skipped:
        _out(f"-- skipped {skipped}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from lifecycle_pipelines.search_sync.index_config import alias_name
    from lifecycle_pipelines.search_sync.sync import SEARCH_FIELDS

    with _stack_resources(args) as resources:
        hits = resources.search.get_backend().search(
            alias_name(), args.query, list(SEARCH_FIELDS), size=args.size
        )
    for hit in hits:
        source = hit.source
        _out(
            f"{hit.score:7.3f}  {hit.doc_id:>8}  {source.get('name', '')}  "
            f"[{source.get('brand', '')}, {source.get('category', '')}]  "
            f"{source.get('price', '')} {source.get('currency', '')}"
        )
    if not hits:
        _out("(no hits)")
    return 0


def _print_request(request: Any) -> None:
    merged = f" (merged into {request.merged_into})" if request.merged_into else ""
    dry = " [dry run]" if request.dry_run else ""
    _out(
        f"request {request.request_id}: subject {request.subject_id} {request.state}{merged}{dry}"
        f" - received {request.received_at:%Y-%m-%d %H:%M} UTC from {request.requested_by}"
    )
    if request.hold_reason:
        _out(f"  held: {request.hold_reason}")


def cmd_erasure_submit(args: argparse.Namespace) -> int:
    from lifecycle_pipelines.control import ensure_control_schema
    from lifecycle_pipelines.erasure.requests import submit, validate

    validate(args.user_id, args.requested_by)  # refuse bad input before touching anything
    with (
        _stack_resources(args) as resources,
        resources.control_db.connect(autocommit=True) as control,
        resources.shop_db.connect(autocommit=True) as shop,
    ):
        ensure_control_schema(control)
        request = submit(control, shop, args.user_id, args.requested_by, dry_run=args.dry_run)
    _print_request(request)
    return 0


def cmd_erasure_status(args: argparse.Namespace) -> int:
    from lifecycle_pipelines.control import ensure_control_schema
    from lifecycle_pipelines.erasure.requests import recent, status

    with (
        _stack_resources(args) as resources,
        resources.control_db.connect(autocommit=True) as control,
    ):
        ensure_control_schema(control)
        if args.request is None:
            requests = recent(control)
        else:
            found = status(control, args.request)
            if found is None:
                raise ValueError(f"request: no erasure request {args.request}")
            requests = [found]
    for request in requests:
        _print_request(request)
    if not requests:
        _out("(no erasure requests)")
    return 0


def _control(args: argparse.Namespace) -> Any:
    """(resources, control connection) context for the erasure commands."""
    from contextlib import ExitStack

    from lifecycle_pipelines.control import ensure_control_schema

    stack = ExitStack()
    resources = stack.enter_context(_stack_resources(args))
    control = stack.enter_context(resources.control_db.connect(autocommit=True))
    ensure_control_schema(control)
    return stack, resources, control


def cmd_erasure_hold(args: argparse.Namespace) -> int:
    from lifecycle_pipelines.erasure.holds import place_hold

    stack, _, control = _control(args)
    with stack:
        hold_id = place_hold(
            control,
            placed_by=args.placed_by,
            reason=args.reason,
            user_id=args.user_id,
            s3_uri=args.s3_uri,
        )
    _out(f"hold {hold_id} placed; hard deletion covered by it waits until it is lifted")
    return 0


def cmd_erasure_lift(args: argparse.Namespace) -> int:
    from lifecycle_pipelines.erasure.holds import lift_hold

    stack, _, control = _control(args)
    with stack:
        if not lift_hold(control, args.hold, args.lifted_by):
            raise ValueError(f"hold: no active hold {args.hold}")
    _out(f"hold {args.hold} lifted; the next daily sweep resumes the deferred requests")
    return 0


def cmd_erasure_certificate(args: argparse.Namespace) -> int:
    from lifecycle_pipelines.erasure import certificate

    stack, resources, control = _control(args)
    with stack:
        cert = certificate.get(control, args.request)
        if cert is None:
            raise ValueError(f"request: request {args.request} has no certificate yet")
        get = {"Bucket": cert.bucket, "Key": cert.object_key}
        if cert.version_id:
            get["VersionId"] = cert.version_id
        body = resources.s3.client("s3").get_object(**get)["Body"].read()
    _out(body.decode())
    _out(f"-- {cert.uri} sha256 {cert.sha256}")
    return 0


def cmd_erasure_verify_chain(args: argparse.Namespace) -> int:
    from lifecycle_pipelines.erasure import certificate

    stack, resources, control = _control(args)
    with stack:
        problems = certificate.verify_chain(control, resources.s3)
        count = control.execute("SELECT count(*) FROM lifecycle.erasure_certificates").fetchone()
    for problem in problems:
        _out(problem)
    _out(f"-- {count[0] if count else 0} certificates, {len(problems)} problems")
    return 1 if problems else 0


def cmd_erasure_replay(args: argparse.Namespace) -> int:
    from lifecycle_pipelines.assets.erasure.erasers import open_stores
    from lifecycle_pipelines.control import ensure_control_schema

    with (
        _stack_resources(args) as r,
        open_stores(
            control_db=r.control_db, shop_db=r.shop_db, s3=r.s3, dynamodb=r.dynamodb,
            search=r.search, warehouse=r.warehouse,
        ) as stores,
    ):  # fmt: skip
        ensure_control_schema(stores.control)
        report, rewrites = stores.replay()
    for recovered in report.recovered:
        _out(
            f"certificate {recovered.sequence}: recorded again from S3 (request "
            f"{recovered.request_id}{'' if recovered.subject_found else ', subject not found'})"
        )
    for store, n in sorted(report.reerased.items()):
        _out(f"{store}: {n} erased again")
    _out(
        f"-- {report.requests} requests re-applied, {report.total} items erased again, "
        f"{rewrites['rewritten']} archive objects rewritten"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `lifecycle` command."""
    parser = argparse.ArgumentParser(
        prog="lifecycle", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="where the local stack keeps its data (default .lifecycle)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start, bootstrap and seed the embedded stack")
    up.add_argument(
        "--keep", action="store_true", help="reuse existing data instead of a fresh start"
    )
    up.add_argument("--no-seed", action="store_true", help="do not generate shop data")
    _size_args(up)
    up.set_defaults(func=cmd_up)

    sub.add_parser("down", help="stop the embedded stack").set_defaults(func=cmd_down)

    dev = sub.add_parser("dev", help="fresh seeded stack plus the Dagster UI")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    _size_args(dev)
    dev.set_defaults(func=cmd_dev)

    seed = sub.add_parser("seed", help="generate shop data into the running stack")
    seed.add_argument("--replace", action="store_true", help="truncate and reseed")
    _size_args(seed)
    seed.set_defaults(func=cmd_seed)

    sub.add_parser("env", help="print the stack's settings").set_defaults(func=cmd_env)

    policy = sub.add_parser("policy", help="retention policy tools")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_sub.add_parser("check", help="validate a retention policy file")
    check.add_argument("file", type=Path, nargs="?", default=None)
    check.set_defaults(func=cmd_policy_check)

    search = sub.add_parser("search", help="search products with the configured backend")
    search.add_argument("query")
    search.add_argument("--size", type=int, default=10, help="hits to print")
    search.set_defaults(func=cmd_search)

    erasure = sub.add_parser("erasure", help="GDPR erasure requests")
    erasure_sub = erasure.add_subparsers(dest="erasure_command", required=True)
    submit_cmd = erasure_sub.add_parser("submit", help="record an erasure request")
    submit_cmd.add_argument("--user-id", required=True, help="the shop's user id of the subject")
    submit_cmd.add_argument("--requested-by", required=True, help="who asked (e-mail or account)")
    submit_cmd.add_argument("--dry-run", action="store_true", help="plan only, change nothing")
    submit_cmd.set_defaults(func=cmd_erasure_submit)
    status_cmd = erasure_sub.add_parser("status", help="one request, or the latest ones")
    status_cmd.add_argument("request", type=int, nargs="?", default=None)
    status_cmd.set_defaults(func=cmd_erasure_status)
    hold_cmd = erasure_sub.add_parser("hold", help="place a legal hold on a subject or object")
    target = hold_cmd.add_mutually_exclusive_group(required=True)
    target.add_argument("--user-id", help="hold every erasure of this subject")
    target.add_argument("--s3-uri", help="hold an archive object (s3://bucket/key)")
    hold_cmd.add_argument("--reason", required=True, help="why (recorded with the hold)")
    hold_cmd.add_argument("--placed-by", required=True, help="who (e-mail or account)")
    hold_cmd.set_defaults(func=cmd_erasure_hold)
    lift_cmd = erasure_sub.add_parser("lift", help="lift a legal hold")
    lift_cmd.add_argument("hold", type=int)
    lift_cmd.add_argument("--lifted-by", required=True, help="who (e-mail or account)")
    lift_cmd.set_defaults(func=cmd_erasure_lift)
    cert_cmd = erasure_sub.add_parser("certificate", help="print a request's certificate")
    cert_cmd.add_argument("request", type=int)
    cert_cmd.set_defaults(func=cmd_erasure_certificate)
    erasure_sub.add_parser(
        "verify-chain", help="check every certificate's hash and link"
    ).set_defaults(func=cmd_erasure_verify_chain)
    erasure_sub.add_parser(
        "replay", help="re-apply the erasure ledger after a database or archive restore"
    ).set_defaults(func=cmd_erasure_replay)

    archive = sub.add_parser("archive", help="archive tools")
    archive_sub = archive.add_subparsers(dest="archive_command", required=True)
    query = archive_sub.add_parser(
        "query", help="run SQL (DuckDB) over the readable archive objects"
    )
    query.add_argument("sql", help='e.g. "SELECT count(*) FROM orders"')
    query.add_argument("--max-rows", type=int, default=50, help="rows to print")
    query.set_defaults(func=cmd_archive_query)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `lifecycle` command."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("botocore", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args))
    except ValueError as err:
        sys.stderr.write(f"error: {err}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())

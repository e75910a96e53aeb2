"""The concurrency proof, in one command (`./dev loadtest` runs it):

    python -m loadtests.proof                      # 4 gunicorn workers, 60 s, every scenario
    python -m loadtests.proof --workers 8 --run-time 2m --users 60 --mix browse=3,contention=2
    python -m loadtests.proof --distributed 2      # Locust master + 2 worker processes
    python -m loadtests.proof --url http://127.0.0.1:8000 --database-url postgresql+asyncpg://...

Starts gunicorn -c gunicorn.conf.py with N workers on a fresh PostgreSQL database (or targets
--url), runs Locust headless, then reconciles: Locust's count per route == the increase of
/metrics' counters; every worker served a share; every row Locust saw created exists and
every one it deleted is gone; zero 5xx and idle gauges at the end; Locust's gates held.
Writes reports/proof-<time>/report.md (tables, plots) next to Locust's CSV and HTML, and
exits 1 when anything failed.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import time
from pathlib import Path

from loadtests.gates import DEFAULT_P95_MS, DEFAULT_P99_MS, SpecError, parse_spec
from loadtests.locust_run import LocustPlan
from loadtests.pipeline import Target, run_and_reconcile
from tooling.database import fresh_database, migrate
from tooling.gunicorn import run_gunicorn
from tooling.postgres import provided_database

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def say(message: str) -> None:
    print(f"[proof] {message}", file=sys.stderr, flush=True)


def duration(text: str) -> int:
    """'60', '60s', '2m', '1m30s', '1h' -> seconds."""
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?", text.strip())
    if not match or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 60s, 2m, 1m30s)")
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def spec(text: str) -> str:
    try:
        parse_spec(text)
    except SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.proof",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    target = p.add_argument_group("target")
    target.add_argument("--workers", type=int, default=4, help="gunicorn workers (default 4)")
    target.add_argument("--url", help="a running deployment to target instead of starting one")
    target.add_argument(
        "--database-url",
        help="PostgreSQL server to create the fresh database on (default: DATABASE_URL, else "
        "the embedded one); with --url: that deployment's database, for the row checks",
    )
    target.add_argument(
        "--reuse-database",
        action="store_true",
        help="use --database-url's database as is (migrated), not a fresh one",
    )
    target.add_argument("--keep-database", action="store_true", help="do not drop it afterwards")
    target.add_argument(
        "--bcrypt-rounds",
        type=int,
        default=10,
        help="BCRYPT_ROUNDS for the started deployment (default 10; the service's own default "
        "is 12, at which a sign-up storm alone saturates a 2-core machine)",
    )
    target.add_argument(
        "--hash-queue-timeout",
        type=float,
        default=10.0,
        help="HASH_QUEUE_TIMEOUT_SECONDS for the started deployment (default 10; the "
        "service's own is 1, at which the burst of sign-ups as Locust's users start is "
        "partly shed with 503, which this proof would count as failures)",
    )
    target.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=_env_pair,
        help="extra environment for the started gunicorn, e.g. DB_POOL_SIZE=5 (repeatable)",
    )
    load = p.add_argument_group("load")
    load.add_argument("--users", type=int, default=40, help="concurrent Locust users")
    load.add_argument("--spawn-rate", type=float, default=10.0, help="users started per second")
    load.add_argument("--run-time", type=duration, default=60, help="e.g. 60s, 2m (default 60s)")
    load.add_argument("--mix", default="", type=spec, help="e.g. browse=3,write=2,contention=2")
    load.add_argument(
        "--distributed",
        "--processes",
        dest="distributed",
        type=int,
        default=0,
        metavar="N",
        help="run Locust as a master and N worker processes (loopback)",
    )
    load.add_argument("--stop-timeout", type=int, default=20, help="seconds for tasks to finish")
    gates = p.add_argument_group("gates (breached: exit 1)")
    gates.add_argument("--max-fail-ratio", type=float, default=0.0)
    gates.add_argument("--p95", type=spec, default=DEFAULT_P95_MS, help="ms per scenario")
    gates.add_argument("--p99", type=spec, default=DEFAULT_P99_MS, help="ms per scenario")
    gates.add_argument("--min-rps", type=float, default=0.0, help="minimum throughput (0: off)")
    out = p.add_argument_group("output")
    out.add_argument("--reports-dir", type=Path, default=PROJECT_ROOT / "reports")
    out.add_argument("--sample-interval", type=float, default=1.0, help="seconds between scrapes")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return _prove(args)
    except KeyboardInterrupt:
        say("interrupted: Locust, gunicorn and the scratch database were stopped")
        return 130


def _prove(args: argparse.Namespace) -> int:
    out_dir = args.reports_dir / time.strftime("proof-%Y%m%d-%H%M%S")
    suffix = 1
    while out_dir.exists():
        suffix += 1
        out_dir = out_dir.with_name(f"{out_dir.name.split('.')[0]}.{suffix}")
    out_dir.mkdir(parents=True)
    say(f"reports: {out_dir}")
    gate_args = (
        "--max-fail-ratio", str(args.max_fail_ratio), "--p95-ms", args.p95,
        "--p99-ms", args.p99, "--min-rps", str(args.min_rps),
    )  # fmt: skip

    def plan(host: str) -> LocustPlan:
        return LocustPlan(
            host=host,
            users=args.users,
            spawn_rate=args.spawn_rate,
            run_seconds=args.run_time,
            out_dir=out_dir,
            mix=args.mix,
            distributed_workers=args.distributed,
            stop_timeout=args.stop_timeout,
            gate_args=gate_args,
        )

    with contextlib.ExitStack() as stack:
        if args.url:
            target = Target(url=args.url.rstrip("/"), database_url=args.database_url)
        else:
            server = stack.enter_context(provided_database(args.database_url, say))
            if args.reuse_database:
                migrate(server)
                db_url = server
            else:
                db_url = stack.enter_context(
                    fresh_database(server, prefix="loadtest", keep=args.keep_database, say=say)
                )
            env = {
                "BCRYPT_ROUNDS": str(args.bcrypt_rounds),
                "HASH_QUEUE_TIMEOUT_SECONDS": str(args.hash_queue_timeout),
                **dict(args.env),
            }
            say(f"starting gunicorn with {args.workers} workers ...")
            started = stack.enter_context(
                run_gunicorn(
                    db_url,
                    workers=args.workers,
                    env=env,
                    log_path=out_dir / "gunicorn.log",
                    wait=False,
                )
            )
            target = Target(started.url, db_url, workers=args.workers, server=started)
        setup = {
            "target": target.url + ("" if target.owned else " (given --url)"),
            "gunicorn workers": str(args.workers) if target.owned else "as deployed",
            "bcrypt rounds": str(args.bcrypt_rounds) if target.owned else "as deployed",
            "hash queue timeout": (
                f"{args.hash_queue_timeout:g} s" if target.owned else "as deployed"
            ),
            "environment": " ".join(f"{k}={v}" for k, v in args.env) or "-",
            "Locust": (
                f"{args.users} users, spawn {args.spawn_rate:g}/s, {args.run_time}s, "
                + (f"master + {args.distributed} workers" if args.distributed else "1 process")
            ),
            "mix": args.mix or "all scenarios, default weights",
            "gates": f"fail ratio <= {args.max_fail_ratio:g}; p95 {args.p95}; p99 {args.p99}"
            + (f"; >= {args.min_rps:g} req/s" if args.min_rps else ""),
        }
        result = run_and_reconcile(
            target, plan(target.url), setup=setup, sample_interval=args.sample_interval, say=say
        )
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())

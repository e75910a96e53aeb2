"""Sample data and ad-hoc runs against any running deployment:

    python -m loadtests.cli seed --url http://127.0.0.1:8000 --users 20 --items 3
    python -m loadtests.cli run --url http://127.0.0.1:8000               # polling + contention
    python -m loadtests.cli run --url URL --scenarios contention --users 30 --run-time 1m
    python -m loadtests.cli run --url URL --reconcile --database-url postgresql+asyncpg://...

`seed` creates users with items through the API and reads each back. `run` runs Locust
headless with the create-while-polling and contention scenarios (every response checked,
gates applied) and prints PASS or FAIL; with --reconcile it runs the whole proof against the
URL (its /metrics must then see no other traffic during the run).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from loadtests import checks, proof
from loadtests.gates import DEFAULT_P95_MS, DEFAULT_P99_MS, SCENARIOS
from loadtests.locust_run import LocustPlan
from loadtests.pipeline import gates_check, run_locust

PASSWORD = "sample-pass-1"


def say(message: str) -> None:
    print(f"[loadtests] {message}", file=sys.stderr, flush=True)


def _seed_one(http: httpx.Client, index: int, items: int) -> str | None:
    """Create one user with items and read it back; the problem, or None."""
    name = f"sample-{uuid.uuid4().hex[:12]}"
    created = http.post(
        "/users",
        json={
            "name": name,
            "password": PASSWORD,
            "fullname": f"Sample User {index}",
            "initial_items": [f"sample item {n}" for n in range(items)],
        },
    )
    if created.status_code != 201:
        return f"POST /users: HTTP {created.status_code} {created.text[:120]}"
    if problem := checks.user_problem(created.json(), name=name):
        return problem
    pubid = created.json()["pubid"]
    read = http.get(f"/users/{pubid}", params={"incl_items": "true"})
    if read.status_code != 200:
        return f"GET /users/{pubid}: HTTP {read.status_code}"
    return checks.user_detail_problem(read.json(), pubid=pubid, name=name, item_count=items)


def seed(url: str, users: int, items: int) -> int:
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=30) as http, ThreadPoolExecutor(4) as pool:
        problems = list(pool.map(lambda i: _seed_one(http, i, items), range(users)))
    failed = [problem for problem in problems if problem]
    for problem in failed[:5]:
        say(f"  {problem}")
    say(
        f"seeded {users - len(failed)} of {users} users with {items} items each in "
        f"{time.monotonic() - started:.1f}s (password {PASSWORD!r}, names sample-*)"
    )
    say("PASS" if not failed else f"FAIL: {len(failed)} users not created or read back")
    return 0 if not failed else 1


def run(args: argparse.Namespace) -> int:
    mix = ",".join(f"{name}=1" for name in args.scenarios.split(","))
    if args.reconcile:
        extra = ["--database-url", args.database_url] if args.database_url else []
        return proof.main(
            ["--url", args.url, "--users", str(args.users), "--run-time", f"{args.run_time}s",
             "--mix", mix, "--distributed", str(args.distributed), "--p95", args.p95,
             "--p99", args.p99, "--reports-dir", str(args.reports_dir), *extra]
        )  # fmt: skip
    out_dir = args.reports_dir / time.strftime("run-%Y%m%d-%H%M%S")
    plan = LocustPlan(
        host=args.url.rstrip("/"),
        users=args.users,
        spawn_rate=args.spawn_rate,
        run_seconds=args.run_time,
        out_dir=out_dir,
        mix=mix,
        distributed_workers=args.distributed,
        gate_args=("--p95-ms", args.p95, "--p99-ms", args.p99,
                   "--max-fail-ratio", str(args.max_fail_ratio)),
    )  # fmt: skip
    codes = run_locust(plan, say)
    check, verdict = gates_check(plan, codes)
    for name, figures in sorted(verdict.get("figures", {}).get("scenarios", {}).items()):
        say(
            f"  {name:<11} {figures['requests']:>6} requests {figures['failures']:>4} failed"
            f"  p95 {figures['p95_ms']:.0f} ms  p99 {figures['p99_ms']:.0f} ms"
        )
    say(f"  {check.detail}")
    say(f"reports: {out_dir} (locust.html, locust_failures.csv)")
    say("PASS" if check.passed else "FAIL")
    return 0 if check.passed else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.cli",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    seed_cmd = sub.add_parser("seed", help="add sample users and items through the API")
    seed_cmd.add_argument("--url", required=True)
    seed_cmd.add_argument("--users", type=int, default=20)
    seed_cmd.add_argument("--items", type=int, default=3)
    run_cmd = sub.add_parser("run", help="run scenarios headless and print PASS or FAIL")
    run_cmd.add_argument("--url", required=True)
    run_cmd.add_argument(
        "--scenarios",
        default="polling,contention",
        type=_scenarios,
        help=f"comma-separated, of {', '.join(SCENARIOS)}",
    )
    run_cmd.add_argument("--users", type=int, default=20)
    run_cmd.add_argument("--spawn-rate", type=float, default=10.0)
    run_cmd.add_argument("--run-time", type=proof.duration, default=30)
    run_cmd.add_argument("--distributed", type=int, default=0, metavar="N")
    run_cmd.add_argument("--max-fail-ratio", type=float, default=0.0)
    run_cmd.add_argument("--p95", type=proof.spec, default=DEFAULT_P95_MS)
    run_cmd.add_argument("--p99", type=proof.spec, default=DEFAULT_P99_MS)
    run_cmd.add_argument("--reconcile", action="store_true", help="the full proof (--url mode)")
    run_cmd.add_argument("--database-url", help="with --reconcile: check rows too")
    run_cmd.add_argument("--reports-dir", type=Path, default=proof.PROJECT_ROOT / "reports")
    return p


def _scenarios(text: str) -> str:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown scenario(s) {unknown}; known: {SCENARIOS}")
    return ",".join(names)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "seed":
        return seed(args.url.rstrip("/"), args.users, args.items)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())

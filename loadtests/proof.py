"""The concurrency proof, in one command (`./dev loadtest` runs it):

    python -m loadtests.proof                      # 4 gunicorn workers, 60 s, every scenario
    python -m loadtests.proof --workers 8 --run-time 2m --users 60 --mix browse=3,contention=2
    python -m loadtests.proof --distributed 2      # Locust's --processes 2: master + 2 workers
    python -m loadtests.proof --url http://127.0.0.1:8000 --database-url postgresql+asyncpg://...

Starts gunicorn -c gunicorn.conf.py with N workers on a fresh PostgreSQL database (or targets
--url), runs Locust headless, then reconciles: Locust's count per route == the increase of
/metrics' counters; every worker served a share; every row Locust saw created exists and
every one it deleted is gone; zero 5xx and idle gauges at the end; Locust's gates held.
Writes reports/proof-<time>-<suffix>/report.md (tables, plots) next to Locust's CSV and
HTML, and exits 1 when anything failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from loadtests import gates, reconcile, report
from loadtests.reconcile import Check
from tooling.database import fresh_database
from tooling.gunicorn import Gunicorn, launch, run_gunicorn, stop, wait_for
from tooling.ledger import read_ledger
from tooling.metrics import Snapshot, scrape
from tooling.postgres import PROJECT_ROOT, free_port, provided_database

SETTLE_SECONDS = 10.0
STOP_TIMEOUT = 20  # seconds for Locust's users to finish their task


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
        gates.parse_spec(text)
    except gates.SpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def env_pair(text: str) -> tuple[str, str]:
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
        "--bcrypt-rounds",
        type=int,
        default=10,
        help="BCRYPT_ROUNDS of the started deployment (default 10: at the service's 12, a "
        "sign-up storm alone saturates a 2-core machine)",
    )
    target.add_argument(
        "--hash-queue-timeout",
        type=float,
        default=10.0,
        help="HASH_QUEUE_TIMEOUT_SECONDS of the started deployment (default 10: at the "
        "service's 1, the burst of sign-ups as Locust's users start is partly shed with 503)",
    )
    target.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=env_pair,
        help="extra environment for the started gunicorn, e.g. DB_POOL_SIZE=5 (repeatable)",
    )
    load = p.add_argument_group("load and output")
    load.add_argument("--users", type=int, default=40, help="concurrent Locust users")
    load.add_argument("--spawn-rate", type=float, default=10.0, help="users started per second")
    load.add_argument("--run-time", type=duration, default=60, help="e.g. 60s, 2m (default 60s)")
    load.add_argument("--mix", default="", type=spec, help="e.g. browse=3,write=2,contention=2")
    load.add_argument(
        "--distributed",
        "--processes",
        type=int,
        default=0,
        metavar="N",
        help="run Locust as a master and N worker processes (Locust's own --processes)",
    )
    load.add_argument("--reports-dir", type=Path, default=PROJECT_ROOT / "reports")
    limits = p.add_argument_group("gates (breached: exit 1)")
    limits.add_argument("--max-fail-ratio", type=float, default=0.0)
    limits.add_argument("--p95", type=spec, default=gates.DEFAULT_P95_MS, help="ms per scenario")
    limits.add_argument("--p99", type=spec, default=gates.DEFAULT_P99_MS, help="ms per scenario")
    limits.add_argument("--min-rps", type=float, default=0.0, help="minimum throughput (0: off)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.reports_dir.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix=time.strftime("proof-%Y%m%d-%H%M%S-"), dir=args.reports_dir))
    say(f"reports: {out}")
    try:
        with contextlib.ExitStack() as stack:
            server: Gunicorn | None = None
            url, database_url = (args.url or "").rstrip("/"), args.database_url
            if not args.url:
                server_url = stack.enter_context(provided_database(args.database_url, say))
                database_url = stack.enter_context(fresh_database(server_url, prefix="loadtest"))
                env = {
                    "BCRYPT_ROUNDS": str(args.bcrypt_rounds),
                    "HASH_QUEUE_TIMEOUT_SECONDS": str(args.hash_queue_timeout),
                    **dict(args.env),
                }
                say(f"starting gunicorn with {args.workers} workers ...")
                log_path = out / "gunicorn.log"
                server = stack.enter_context(
                    run_gunicorn(database_url, workers=args.workers, env=env, log_path=log_path)
                )
                url = server.url
            return 0 if run_and_reconcile(args, url, server, database_url, out).passed else 1
    except KeyboardInterrupt:
        say("interrupted: Locust, gunicorn and the scratch database were stopped")
        return 130


def setup(args: argparse.Namespace, url: str, server: Gunicorn | None) -> dict[str, str]:
    """The report's first table."""
    deployed = "as deployed" if server is None else None
    return {
        "target": url + (" (given --url)" if server is None else ""),
        "gunicorn workers": deployed or str(args.workers),
        "bcrypt rounds": deployed or str(args.bcrypt_rounds),
        "hash queue timeout": deployed or f"{args.hash_queue_timeout:g} s",
        "environment": " ".join(f"{k}={v}" for k, v in args.env) or "-",
        "Locust": f"{args.users} users, spawn {args.spawn_rate:g}/s, {args.run_time}s, "
        + (f"master + {args.distributed} workers" if args.distributed else "1 process"),
        "mix": args.mix or "all scenarios, default weights",
        "gates": f"fail ratio <= {args.max_fail_ratio:g}; p95 {args.p95}; p99 {args.p99}"
        + (f"; >= {args.min_rps:g} req/s" if args.min_rps else ""),
    }


def sample(url: str, base: Snapshot, stop: threading.Event, out: list[Snapshot | None]) -> None:
    """Until `stop`: a /metrics scrape a second into `out` (None when one failed), and a
    progress line every five."""
    with httpx.Client(base_url=url, timeout=10) as http:
        while not stop.wait(1.0):
            try:
                out.append(now := scrape(http))
            except httpx.HTTPError as exc:
                out.append(None)
                if (failed := out.count(None)) in {1, 10, 100}:
                    say(f"metrics scrape failed ({failed}x): {exc!r}")
                continue
            if len(out) % 5 == 0:
                per_worker = reconcile.increase(now.worker_requests, base.worker_requests)
                workers = " ".join(f"{k}:{v:.0f}" for k, v in sorted(per_worker.items()))
                say(
                    f"{now.taken_at - base.taken_at:5.0f}s  "
                    f"{now.total_requests - base.total_requests:7.0f} requests  "
                    f"in flight {sum(now.in_progress.values()):3.0f}  pool "
                    f"{sum(now.pool_checked_out.values()):3.0f}/{sum(now.pool_size.values()):.0f}  "
                    f"5xx {now.server_errors() - base.server_errors():.0f}  per worker {workers}"
                )


def take_baseline(url: str) -> Snapshot:
    """Once /readyz answers 200 (a deployment the proof started has booted every worker by
    then): the /metrics snapshot the run is measured from."""
    with httpx.Client(base_url=url, timeout=5) as http:

        def ready() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return http.get("/readyz").status_code == 200
            return False

        wait_for(ready, timeout=90, interval=0.2, what=f"{url}/readyz to answer 200")
        return scrape(http)


def run_locust(args: argparse.Namespace, url: str, out: Path) -> int:
    """Locust headless, in a process group of its own."""
    command = [
        *(sys.executable, "-m", "locust", "-f", "loadtests/locustfile.py", "-H", url),
        *("--headless", "--only-summary", "-u", str(args.users), "-r", str(args.spawn_rate)),
        *("-t", f"{args.run_time}s", "--stop-timeout", str(STOP_TIMEOUT)),
        *("--csv", str(out / "locust"), "--html", str(out / "locust.html")),
        *("--ledger-dir", str(out / "ledger"), "--gates-file", str(out / "gates.json")),
        *("--max-fail-ratio", str(args.max_fail_ratio), "--min-rps", str(args.min_rps)),
        *("--p95-ms", args.p95, "--p99-ms", args.p99, "--mix", args.mix),
    ]
    if args.distributed:
        port = str(free_port())
        command += ["--processes", str(args.distributed), "--master-bind-host", "127.0.0.1"]
        command += ["--master-bind-port", port, "--master-port", port]
    mode = f"master + {args.distributed} workers" if args.distributed else "local"
    say(f"locust ({mode}): {args.users} users for {args.run_time}s against {url}")
    process = launch(command, env=dict(os.environ), log_path=out / "locust.log")
    try:
        code = process.wait(args.run_time + STOP_TIMEOUT + 120)
    except subprocess.TimeoutExpired:
        code = -1
    finally:
        stop(process, timeout=10)  # its process group: with --processes, the forked workers
    say(f"locust finished, exit code {code} (log: locust.log)")
    return code


def settle(url: str) -> tuple[Snapshot, int]:
    """The final scrape, once nothing is in flight (or SETTLE_SECONDS passed). Returns it
    and how many scrapes it took (all but the last are counted in it)."""
    scrapes: list[Snapshot] = []

    def idle() -> bool:
        scrapes.append(now := scrape(http))
        in_flight = sum(now.in_progress.values()) - 1  # besides this scrape
        return in_flight <= 0 and sum(now.pool_checked_out.values()) == 0

    with httpx.Client(base_url=url, timeout=10) as http, contextlib.suppress(TimeoutError):
        wait_for(idle, timeout=SETTLE_SECONDS, interval=0.3, what="idle gauges")
    return scrapes[-1], len(scrapes)


def gates_check(out: Path, code: int) -> tuple[Check, dict[str, Any]]:
    name, path = "5. Locust gates", out / "gates.json"
    if not path.exists():
        return Check(name, False, f"no verdict written; exit code {code}"), {}
    verdict: dict[str, Any] = json.loads(path.read_text())
    figures = verdict["figures"]
    detail = "; ".join(verdict["breaches"]) or (
        f"{figures['requests']} requests, {figures['failures']} failures, "
        f"{figures['rps']:.1f} req/s; every latency gate held"
    )
    if code:
        detail += f"; locust exit code {code}"
    return Check(name, verdict["passed"] and code == 0, detail), verdict


def server_log_check(server: Gunicorn, *, since: int) -> Check:
    """Tracebacks or worker timeouts logged from the baseline on; earlier ones (boot, the
    readiness polling) are mentioned without failing the run."""

    def bad(text: bytes) -> list[str]:
        markers = ("Traceback", "[CRITICAL]", "WORKER TIMEOUT")
        lines = text.decode(errors="replace").splitlines()
        return [line for line in lines if any(m in line for m in markers)]

    with server.log_path.open("rb") as handle:
        before, during = bad(handle.read(since)), bad(handle.read())
    detail = (
        f"{len(during)} lines, first: {during[0][:160]}" if during else "no tracebacks or timeouts"
    )
    if before:
        detail += f" (before the run: {len(before)}, first: {before[0][:120]})"
    return Check("6. gunicorn log clean during the run", not during, detail)


def run_and_reconcile(
    args: argparse.Namespace, url: str, server: Gunicorn | None, database_url: str | None, out: Path
) -> report.ProofResult:
    """Baseline, load with sampling, final state, every reconciliation, the plots and the
    report, against a ready target."""
    settings = setup(args, url, server)
    baseline = take_baseline(url)
    say(f"{len(baseline.live_slots)} workers ready at {url}")
    log_offset = server.log_path.stat().st_size if server is not None else 0
    # The table counts before the run, where nobody else writes: a database the proof made.
    counts_before = reconcile.table_counts(database_url) if server and database_url else None
    stop, samples = threading.Event(), list[Snapshot | None]()
    sampler = threading.Thread(target=sample, args=(url, baseline, stop, samples), daemon=True)
    sampler.start()
    try:
        code = run_locust(args, url, out)
    finally:
        stop.set()
        sampler.join(30)
    verdict_check, verdict = gates_check(out, code)
    ledger = read_ledger(out / "ledger")
    try:
        final, attempts = settle(url)
    except httpx.HTTPError as exc:
        detail = f"final /metrics scrape failed: {exc!r}"
        if server is not None and server.process.poll() is not None:
            detail += f"; gunicorn exited during the run with {server.process.returncode}"
        checks = [Check("0. deployment reachable after the run", False, detail), verdict_check]
        result = report.ProofResult(settings, checks, ledger, verdict)
        report.write(result, out, say)
        return result

    routes = verdict.get("figures", {}).get("routes", {})
    locust = Counter({tuple(key.split(" ", 1)): count for key, count in routes.items()})
    server_counts = final.by_route()
    server_counts.subtract(baseline.by_route())
    # /metrics requests: the baseline scrape, the sampler's, and all but the last settling one.
    scrapes = 1 + len(samples) + attempts - 1
    route_check, route_rows = reconcile.routes(
        locust, server_counts, scrapes=scrapes, per_process=ledger.requests
    )
    worker_check, worker_rows = reconcile.workers(
        final, baseline, route_total=sum(server_counts.values()), pids_seen=ledger.worker_pids
    )
    checks = [
        route_check,
        worker_check,
        *reconcile.database(database_url, ledger, counts_before),
        *reconcile.final_state(final, baseline),
        reconcile.throttled_logins(ledger, final, baseline),
        verdict_check,
    ]
    if server is not None:
        checks.append(server_log_check(server, since=log_offset))
    result = report.ProofResult(settings, checks, ledger, verdict, route_rows, worker_rows)
    result.plots = report.plots([s for s in samples if s], baseline, worker_rows, out)
    report.write(result, out, say)
    return result


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark harness: every configuration, interleaved over rounds, on one database.

    python -m benchmarks.run                     # everything, 3 rounds of 10 s runs (~27 min)
    python -m benchmarks.run --rounds 1 --duration 3 --configs gunicorn,uvicorn-w2
    python -m benchmarks.run --report-only       # re-render RESULTS.md/PNG from results.json
    python -m benchmarks.run --soak 10           # 10 min at ~80 % of max reads: SOAK.md

Runs on a fresh database, dropped afterwards, on DATABASE_URL's server or else on an embedded
PostgreSQL in .pgdata/bench. Needs wrk (apt-get install wrk). Writes benchmarks/results.json,
RESULTS.md and results.png (or into --out).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import plot, report, soak
from benchmarks.harness import SETTINGS, WORKLOADS, Database, Harness, say
from benchmarks.measure import describe, wrk_version
from benchmarks.servers import BASELINE, BENCH_DIR, CONFIGS
from service.core.settings import Settings
from tooling.database import fetch_value, fresh_database
from tooling.postgres import EmbeddedPostgres, provided_database


def _csv(choices: list[str]) -> Any:
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        if unknown := [v for v in values if v not in choices]:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {choices}")
        return values

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--rounds", type=int, default=3, help="rounds (default 3)")
    add("--duration", type=float, default=10, help="seconds per run (10; steady run: 20)")
    add("--connections", type=int, default=50, help="wrk connections (50)")
    configs, workloads = list(CONFIGS), list(WORKLOADS)
    add("--configs", type=_csv(configs), default=configs, help=", ".join(configs))
    add("--workloads", type=_csv(workloads), default=workloads, help=", ".join(workloads))
    add(
        "--candidate",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="also run config 1 from another source tree (a tuning to compare), repeatable",
    )
    add("--out", type=Path, default=BENCH_DIR, help="results directory")
    add("--report-only", action="store_true", help="re-render from results.json")
    add(
        "--soak",
        type=int,
        default=0,
        metavar="MINUTES",
        help="instead of the rounds: config 1 at ~80%% of its max reads for MINUTES (SOAK.md)",
    )
    return parser.parse_args(argv)


@contextmanager
def provide_database() -> Iterator[Database]:
    """A fresh database, migrated, on DATABASE_URL's server or else on the embedded PostgreSQL
    in .pgdata/bench (whose CPU is measured too); dropped afterwards. Session counts are read
    from the server's URL: another database, so reading them opens no session in the one
    being measured."""
    data_dir = BENCH_DIR.parent / ".pgdata" / "bench"
    with (
        provided_database(None, say, data_dir) as url,
        fresh_database(url, prefix="bench", say=say) as fresh,
    ):
        embedded = None if os.environ.get("DATABASE_URL") else EmbeddedPostgres(data_dir)
        yield Database(fresh, url, embedded.postmaster_pid() if embedded else None)


def _service_settings() -> str:
    names = {name.upper() for name in Settings.model_fields} - {"DATABASE_URL", "JWT_SECRET_KEY"}
    names |= {"TIMEOUT", "KEEPALIVE", "MAX_REQUESTS", "LIMIT_CONCURRENCY", "PRELOAD_APP"}
    changed = [f"{name}={os.environ[name]}" for name in sorted(names) if name in os.environ]
    return "defaults, except " + ", ".join(changed) if changed else "defaults"


def build_document(
    bench: Harness, command: str, started: datetime, machine: dict[str, str]
) -> dict[str, Any]:
    args = bench.args
    pool = Settings(database_url=bench.database.url).connections_per_worker
    document = {
        "run": {
            "command": command,
            "started": started.isoformat(timespec="seconds"),
            "elapsed_minutes": (datetime.now(UTC) - started).total_seconds() / 60,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "connections": args.connections,
            **SETTINGS,
            "service_settings": _service_settings(),
            "pool_total": pool * CONFIGS[BASELINE].workers,
        },
        "machine": machine,
        "configs": {config.key: config.label for config in bench.configs},
        "workloads": {key: WORKLOADS[key].title for key in args.workloads},
        "samples": bench.samples,
        "server_samples": bench.server_samples,
        "failures": bench.failures,
    }
    return report.analyse(document)


def publish(document: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if document["summaries"]:
        plot.render(document, out / report.PLOT_NAME)
        plot.render_scaling(document, out / report.SCALING_PLOT_NAME)
    report.write(document, out)
    print(report.console_table(document))
    say(f"wrote {out / 'RESULTS.md'}, {out / 'results.json'}, {out / report.PLOT_NAME}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        document = json.loads((args.out / "results.json").read_text())
        publish(report.analyse(document), args.out)
        return 0
    wrk = wrk_version()
    started = datetime.now(UTC)
    given = sys.argv[1:] if argv is None else argv
    command = shlex.join(["python", "-m", "benchmarks.run", *given])
    work_dir = Path(tempfile.mkdtemp(prefix="bench-run-"))
    with provide_database() as database:
        version = str(fetch_value(database.url, "SHOW server_version"))
        machine = describe(wrk_version=wrk, postgres_version=version)
        bench = Harness(args, database, work_dir)
        bench.seed()
        if args.soak:
            result = soak.soak(bench, args.soak)
            args.out.mkdir(parents=True, exist_ok=True)
            soak.write(result, args.out, command)
            shutil.rmtree(work_dir, ignore_errors=True)
            return 0 if all(v["met"] for v in result["verdicts"]) else 1
        bench.run()
    document = build_document(bench, command, started, machine)
    publish(document, args.out)
    if bench.failures:
        say(f"server logs kept in {work_dir}")
    else:
        shutil.rmtree(work_dir, ignore_errors=True)
    expected = {(c.key, w) for c in bench.configs for w in c.workloads if w in args.workloads}
    measured = {(s["config"], s["workload"]) for s in document["summaries"]}
    return 0 if expected <= measured else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark harness: every configuration, interleaved over rounds, on one database.

    python -m benchmarks.run                     # everything, 3 rounds of 10 s runs (~15 min)
    python -m benchmarks.run --rounds 1 --duration 3 --configs gunicorn,uvicorn-w2
    python -m benchmarks.run --report-only       # re-render RESULTS.md/PNG from results.json
    python -m benchmarks.run --soak 10           # 10 min at ~80 % of max reads: SOAK.md

Uses an embedded PostgreSQL in .pgdata/bench (a fresh `bench` database each run) unless
DATABASE_URL is set. Needs wrk (apt-get install wrk). Writes benchmarks/results.json,
RESULTS.md and results.png (or into --out).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks.common import BENCH_DIR
from benchmarks.configs import CONFIGS
from benchmarks.workloads import WORKLOADS


def _csv(choices: list[str]) -> Any:
    def parse(text: str) -> list[str]:
        values = [v.strip() for v in text.split(",") if v.strip()]
        unknown = [v for v in values if v not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {choices}")
        return values

    return parse


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--duration", type=float, default=10, help="seconds per run (10)")
    parser.add_argument("--steady-duration", type=float, default=20, help="steady run (20)")
    parser.add_argument("--warmup", type=float, default=2, help="warm-up per start (2)")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections (50)")
    parser.add_argument("--signup-connections", type=int, default=4, help="sign-up storm (4)")
    parser.add_argument("--scrape-interval", type=float, default=0.1, help="seconds (0.1)")
    parser.add_argument(
        "--quiet-threshold",
        type=float,
        default=20,
        help="before each run, wait until the machine's CPU use is at most this %% (20)",
    )
    parser.add_argument("--quiet-wait", type=float, default=3, help="but at most (3 s)")
    parser.add_argument("--seed-users", type=int, default=100)
    parser.add_argument("--seed-items", type=int, default=10, help="items per seeded user")
    parser.add_argument(
        "--configs", type=_csv(list(CONFIGS)), default=list(CONFIGS), help=", ".join(CONFIGS)
    )
    parser.add_argument(
        "--workloads",
        type=_csv(list(WORKLOADS)),
        default=list(WORKLOADS),
        help=", ".join(WORKLOADS),
    )
    parser.add_argument(
        "--candidate",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="also run config 1 from another source tree (a tuning to compare), repeatable",
    )
    parser.add_argument("--out", type=Path, default=BENCH_DIR, help="results directory")
    parser.add_argument("--keep-logs", action="store_true", help="keep server logs")
    parser.add_argument("--report-only", action="store_true", help="re-render from results.json")
    parser.add_argument(
        "--soak",
        type=int,
        default=0,
        metavar="MINUTES",
        help="instead of the rounds: config 1 at ~80%% of its max reads for MINUTES (SOAK.md)",
    )
    return parser.parse_args(argv)

"""results.json: the run's raw samples plus what is computed from them, then published as
RESULTS.md, results.png and the console table."""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import plot, report, scaling
from benchmarks.common import say
from benchmarks.configs import BASELINE, CONFIGS
from benchmarks.harness import Harness
from benchmarks.results import ServerSample, TargetBuilder, summarize, summarize_servers
from benchmarks.workloads import WORKLOADS, Sample
from service.core.settings import Settings

PLOT_NAME = "results.png"


def _service_settings() -> str:
    names = {name.upper() for name in Settings.model_fields} - {"DATABASE_URL", "JWT_SECRET_KEY"}
    names |= {"TIMEOUT", "KEEPALIVE", "MAX_REQUESTS", "LIMIT_CONCURRENCY", "PRELOAD_APP"}
    changed = [f"{name}={os.environ[name]}" for name in sorted(names) if name in os.environ]
    return "defaults, except " + ", ".join(changed) if changed else "defaults"


def analyse(document: dict[str, Any]) -> dict[str, Any]:
    """(Re)compute medians, ratios and targets from the raw samples in `document`."""
    samples = [Sample(**s) for s in document["samples"]]
    server_samples = [ServerSample(**s) for s in document["server_samples"]]
    summaries = summarize(samples)
    servers = summarize_servers(server_samples)
    targets = TargetBuilder(summaries, servers, document["run"]["pool_total"]).build()
    return {
        **document,
        "summaries": [asdict(s) for s in summaries],
        "servers": [asdict(s) for s in servers],
        "targets": [asdict(t) for t in targets],
    }


def build_document(harness: Harness, started: datetime, machine: dict[str, str]) -> dict[str, Any]:
    args = harness.args
    pool = Settings(database_url=harness.database.url).connections_per_worker
    command = "python -m benchmarks.run " + shlex.join(sys.argv[1:])
    document = {
        "run": {
            "command": command.strip(),
            "started": started.isoformat(timespec="seconds"),
            "elapsed_minutes": (datetime.now(UTC) - started).total_seconds() / 60,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "steady_duration_s": args.steady_duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "signup_connections": args.signup_connections,
            "scrape_interval_s": args.scrape_interval,
            "quiet_threshold_pct": args.quiet_threshold,
            "quiet_wait_s": args.quiet_wait,
            "seed_users": args.seed_users,
            "seed_items_per_user": args.seed_items,
            "service_settings": _service_settings(),
            "pool_total": pool * CONFIGS[BASELINE].workers,
        },
        "machine": machine,
        "configs": {config.key: config.label for config in harness.configs},
        "workloads": {key: WORKLOADS[key].title for key in args.workloads},
        "samples": [asdict(s) for s in harness.samples],
        "server_samples": [asdict(s) for s in harness.server_samples],
        "failures": harness.failures,
    }
    return analyse(document)


def publish(document: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if document["summaries"]:
        plot.render(document, out / PLOT_NAME)
        scaling.render(document, out / scaling.PLOT_NAME)
    report.write(document, out, PLOT_NAME)
    print(report.console_table(document))
    say(f"wrote {out / 'RESULTS.md'}, {out / 'results.json'}, {out / PLOT_NAME}")

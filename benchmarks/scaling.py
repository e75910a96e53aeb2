"""How cost grows: req/s and p99 against connections, and req/s against workers, for this
deployment (config 1) on one-row reads. A table for RESULTS.md and scaling.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.configs import BASELINE

PLOT_NAME = "scaling.png"
CONNECTION_STEPS = (("c10", 10), ("read", 50), ("c200", 200), ("c1000", 1000))
WORKER_STEPS = (("gunicorn-1w", 1), (BASELINE, 2), ("gunicorn-4w", 4))


def _by_key(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(s["config"], s["workload"]): s for s in document["summaries"]}


def connection_rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    by_key = _by_key(document)
    return [
        {"connections": n, **by_key[(BASELINE, w)]}
        for w, n in CONNECTION_STEPS
        if (BASELINE, w) in by_key
    ]


def worker_rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    by_key = _by_key(document)
    return [{"workers": n, **by_key[(c, "read")]} for c, n in WORKER_STEPS if (c, "read") in by_key]


def table(document: dict[str, Any]) -> list[str]:
    lines = []
    rows = connection_rows(document)
    if rows:
        lines += [
            "| connections | req/s | p50 ms | p99 ms | errors | timeouts | server CPU ms/req |",
            "|---|---|---|---|---|---|---|",
            *(
                f"| {r['connections']} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
                f"| {r['errors']} | {r['timeouts']} | {r['server_cpu_ms_per_request']:.2f} |"
                for r in rows
            ),
            "",
        ]
    rows = worker_rows(document)
    if rows:
        lines += [
            "| workers (50 connections) | req/s | p99 ms | server CPU ms/req | machine CPU % |",
            "|---|---|---|---|---|",
            *(
                f"| {r['workers']} | {r['rps']:.0f} | {r['p99_ms']:.1f} "
                f"| {r['server_cpu_ms_per_request']:.2f} | {r['system_cpu_pct']:.0f} |"
                for r in rows
            ),
            "",
        ]
    return lines


def render(document: dict[str, Any], path: Path) -> bool:
    """Writes the plot; False when the run measured neither curve."""
    by_connections, by_workers = connection_rows(document), worker_rows(document)
    if not by_connections and not by_workers:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    if by_connections:
        xs = [r["connections"] for r in by_connections]
        left.plot(xs, [r["rps"] for r in by_connections], "o-", label="req/s")
        left.set_xscale("log")
        left.set_xticks(xs, [str(x) for x in xs])
        left.set_xlabel("wrk connections (config 1, 2 workers)")
        left.set_ylabel("requests per second")
        left.set_ylim(bottom=0)
        latency = left.twinx()
        latency.plot(xs, [r["p99_ms"] for r in by_connections], "s--", color="tab:red")
        latency.set_ylabel("p99 ms (red, log scale)", color="tab:red")
        latency.set_yscale("log")
        left.set_title("One-row authenticated reads against connections")
        left.grid(alpha=0.3)
    if by_workers:
        xs = [r["workers"] for r in by_workers]
        right.plot(xs, [r["rps"] for r in by_workers], "o-")
        right.set_xticks(xs, [str(x) for x in xs])
        right.set_xlabel(f"gunicorn workers, 50 connections, {document['machine']['cores']} cores")
        right.set_ylabel("requests per second")
        right.set_ylim(bottom=0)
        right.set_title("One-row authenticated reads against workers")
        right.grid(alpha=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True

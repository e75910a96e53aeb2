"""Soak: config 1 under about 80 % of its measured maximum read throughput for N minutes,
one wrk run per minute, with each worker's RSS and open file descriptors read after each.

    python -m benchmarks.run --soak 10      # ./dev bench --soak 10

Passes when, after the first (warm-up) minute, each worker's RSS grows by at most 5 MB and
its descriptor count does not grow, no request fails, and the last minute's p99 is within
1.5x of the first minute's. Writes SOAK.md and soak.json into --out."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import say
from benchmarks.configs import BASELINE, CONFIGS
from benchmarks.harness import Harness
from benchmarks.servers import RunningServer, start_server
from benchmarks.workloads import warm_up
from benchmarks.wrk import WrkProcess
from tooling.processes import rss_mb

LOAD_SHARE = 0.8
RSS_GROWTH_LIMIT_MB = 5.0
P99_GROWTH_LIMIT = 1.5
PROBE_SECONDS = 10
WARM_UP_S = 5  # fill the pools before the probe: a cold start is not the maximum


@dataclass(frozen=True, slots=True)
class Minute:
    minute: int
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    timeouts: int
    pause_ms: float
    rss_mb: dict[str, float]  # per worker pid
    open_fds: dict[str, int]


def _open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def _run_minute(
    server: RunningServer, data_file: Path, connections: int, pause_ms: float, minute: int
) -> Minute:
    result = WrkProcess(
        server.url,
        "paced.lua",
        connections=connections,
        duration_s=60,
        script_args=[str(data_file), f"{pause_ms:.2f}"],
    ).finish()
    pids = server.worker_pids()
    return Minute(
        minute=minute,
        rps=result.rps,
        p50_ms=result.p50_ms,
        p99_ms=result.p99_ms,
        errors=result.errors,
        timeouts=result.timeouts,
        pause_ms=pause_ms,
        rss_mb={str(pid): rss_mb(pid) or 0.0 for pid in pids},
        open_fds={str(pid): _open_fds(pid) for pid in pids},
    )


def soak(harness: Harness, minutes: int) -> dict[str, Any]:
    connections = harness.args.connections
    server = start_server(CONFIGS[BASELINE], harness.env, harness.work_dir, "soak")
    try:
        server.wait_first_200()
        warm_up(server, data_file=harness.data_file, connections=connections, seconds=WARM_UP_S)
        probe = WrkProcess(
            server.url,
            "read.lua",
            connections=connections,
            duration_s=PROBE_SECONDS,
            script_args=[str(harness.data_file)],
        ).finish()
        target = LOAD_SHARE * probe.rps
        say(f"soak: maximum {probe.rps:.0f} req/s; holding about {target:.0f} req/s")
        # Each connection sends, waits for the answer, then pauses: rate ~ C / (latency + pause).
        pause_ms = max(0.0, 1000 * connections / target - probe.p50_ms)
        measured: list[Minute] = []
        for minute in range(1, minutes + 1):
            sample = _run_minute(server, harness.data_file, connections, pause_ms, minute)
            measured.append(sample)
            say(
                f"soak minute {minute}: {sample.rps:.0f} req/s p99 {sample.p99_ms:.1f} ms "
                f"err {sample.errors} to {sample.timeouts} RSS {sample.rss_mb} fds "
                f"{sample.open_fds}"
            )
            if sample.rps > 0:  # steer the next minute toward the target rate
                cycle_ms = 1000 * connections / sample.rps  # latency + pause, per connection
                pause_ms = max(0.0, pause_ms + 1000 * connections / target - cycle_ms)
    finally:
        server.stop()
    return {
        "max_rps": probe.rps,
        "target_rps": target,
        "connections": connections,
        "minutes": [asdict(m) for m in measured],
        "verdicts": verdicts(measured),
    }


def verdicts(minutes: list[Minute]) -> list[dict[str, Any]]:
    first, last = minutes[0], minutes[-1]
    pids = sorted(set(first.rss_mb) & set(last.rss_mb))
    growth = {pid: last.rss_mb[pid] - first.rss_mb[pid] for pid in pids}
    fd_growth = {pid: last.open_fds[pid] - first.open_fds[pid] for pid in pids}
    errors = sum(m.errors + m.timeouts for m in minutes)
    p99_factor = last.p99_ms / first.p99_ms if first.p99_ms else float("inf")
    same_workers = set(first.rss_mb) == set(last.rss_mb)
    return [
        {
            "name": "RSS growth per worker after warm-up",
            "requirement": f"<= {RSS_GROWTH_LIMIT_MB:.0f} MB",
            "measured": ", ".join(f"{g:+.1f} MB" for g in growth.values()) or "-",
            "met": same_workers and all(g <= RSS_GROWTH_LIMIT_MB for g in growth.values()),
        },
        {
            "name": "open file descriptors per worker after warm-up",
            "requirement": "flat",
            "measured": ", ".join(f"{g:+d}" for g in fd_growth.values()) or "-",
            "met": same_workers and all(g <= 0 for g in fd_growth.values()),
        },
        {
            "name": "errors and timeouts",
            "requirement": "0",
            "measured": str(errors),
            "met": errors == 0,
        },
        {
            "name": "p99, last minute vs first",
            "requirement": f"<= {P99_GROWTH_LIMIT}x",
            "measured": f"{p99_factor:.2f}x ({last.p99_ms:.1f} vs {first.p99_ms:.1f} ms)",
            "met": p99_factor <= P99_GROWTH_LIMIT,
        },
    ]


def write(result: dict[str, Any], out: Path, command: str) -> None:
    (out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# Soak results",
        "",
        f"Generated by `{command}`: config 1 (gunicorn, 2 workers), wrk with "
        f"{result['connections']} paced connections, one 60 s run per minute, at about "
        f"{100 * LOAD_SHARE:.0f} % of the {result['max_rps']:.0f} req/s measured just before "
        f"(target {result['target_rps']:.0f} req/s). The first minute is the warm-up: growth "
        "is measured from its end. Raw data: `soak.json`.",
        "",
        "| minute | req/s | p50 ms | p99 ms | errors | timeouts | RSS MB per worker | fds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in result["minutes"]:
        rss = ", ".join(f"{v:.1f}" for v in m["rss_mb"].values())
        fds = ", ".join(str(v) for v in m["open_fds"].values())
        lines.append(
            f"| {m['minute']} | {m['rps']:.0f} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} "
            f"| {m['errors']} | {m['timeouts']} | {rss} | {fds} |"
        )
    lines += ["", "| check | requirement | measured | met |", "|---|---|---|---|"]
    for v in result["verdicts"]:
        met = "yes" if v["met"] else "**no**"
        lines.append(f"| {v['name']} | {v['requirement']} | {v['measured']} | {met} |")
    (out / "SOAK.md").write_text("\n".join(lines) + "\n")
    say(f"wrote {out / 'SOAK.md'} and {out / 'soak.json'}")

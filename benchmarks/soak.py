"""Soak: config 1 under about 80 % of its measured maximum read throughput for N minutes,
one wrk run per minute, with each worker's RSS and open file descriptors read after each.

    python -m benchmarks.run --soak 10      # ./dev bench --soak 10

Passes when, after the first (warm-up) minute, each worker's RSS grows by at most 5 MB and
its descriptor count does not grow, no request fails, and the last minute's p99 is within
1.5x of the first minute's. Writes SOAK.md and soak.json into --out."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from benchmarks.harness import Harness, say
from benchmarks.measure import Wrk
from benchmarks.report import columns
from benchmarks.servers import BASELINE, CONFIGS, start_server
from tooling.processes import rss_mb

LOAD_SHARE = 0.8
RSS_GROWTH_LIMIT_MB = 5.0
P99_GROWTH_LIMIT = 1.5
PROBE_SECONDS = 10
WARM_UP_S = 5  # fill the pools before the probe: a cold start is not the maximum
MINUTE_COLUMNS = {
    "minute": "{minute}",
    "req/s": "{rps:.0f}",
    "p50 ms": "{p50_ms:.1f}",
    "p99 ms": "{p99_ms:.1f}",
    "errors": "{errors}",
    "timeouts": "{timeouts}",
    "RSS MB per worker": "{rss}",
    "fds": "{fds}",
}
CHECK_COLUMNS = {"check": "{name}", "requirement": "{requirement}", "measured": "{measured}"}
CHECK_COLUMNS["met"] = "{met}"


def _open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def soak(harness: Harness, minutes: int) -> dict[str, Any]:
    connections, data = harness.args.connections, str(harness.data_file)
    server = start_server(CONFIGS[BASELINE], harness.env, harness.work_dir, "soak")
    measured: list[dict[str, Any]] = []
    try:
        server.wait_first_200()
        harness.warm_up(server, WARM_UP_S)
        probe = Wrk(server.url, "read.lua", data, connections=connections, seconds=PROBE_SECONDS)
        result = probe.finish()
        max_rps, probe_p50_ms = result["rps"], result["p50_ms"]
        target = LOAD_SHARE * max_rps
        say(f"soak: maximum {max_rps:.0f} req/s; holding about {target:.0f} req/s")
        # Each connection sends, waits for the answer, then pauses: rate ~ C / (latency + pause).
        pause_ms = max(0.0, 1000 * connections / target - probe_p50_ms)
        for minute in range(1, minutes + 1):
            args = (data, f"{pause_ms:.2f}")
            run = Wrk(server.url, "paced.lua", *args, connections=connections, seconds=60)
            result, pids = run.finish(), server.worker_pids()
            m = {"minute": minute, "pause_ms": pause_ms}
            m |= {key: result[key] for key in ("rps", "p50_ms", "p99_ms", "errors", "timeouts")}
            m["rss_mb"] = {str(pid): rss_mb(pid) or 0.0 for pid in pids}
            m["open_fds"] = {str(pid): _open_fds(pid) for pid in pids}
            measured.append(m)
            say(
                f"soak minute {minute}: {m['rps']:.0f} req/s p99 {m['p99_ms']:.1f} ms err "
                f"{m['errors']} to {m['timeouts']} RSS {m['rss_mb']} fds {m['open_fds']}"
            )
            if m["rps"] > 0:  # steer the next minute toward the target rate
                cycle_ms = 1000 * connections / m["rps"]  # latency + pause, per connection
                pause_ms = max(0.0, pause_ms + 1000 * connections / target - cycle_ms)
    finally:
        server.stop()
    return {
        "max_rps": max_rps,
        "target_rps": target,
        "connections": connections,
        "minutes": measured,
        "verdicts": verdicts(measured),
    }


def verdicts(minutes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    first, last = minutes[0], minutes[-1]
    pids = sorted(set(first["rss_mb"]) & set(last["rss_mb"]))
    growth = [last["rss_mb"][pid] - first["rss_mb"][pid] for pid in pids]
    fd_growth = [last["open_fds"][pid] - first["open_fds"][pid] for pid in pids]
    errors = sum(m["errors"] + m["timeouts"] for m in minutes)
    p99_factor = last["p99_ms"] / first["p99_ms"] if first["p99_ms"] else float("inf")
    same_workers = set(first["rss_mb"]) == set(last["rss_mb"])
    rows = [
        (
            "RSS growth per worker after warm-up",
            f"<= {RSS_GROWTH_LIMIT_MB:.0f} MB",
            ", ".join(f"{g:+.1f} MB" for g in growth) or "-",
            same_workers and all(g <= RSS_GROWTH_LIMIT_MB for g in growth),
        ),
        (
            "open file descriptors per worker after warm-up",
            "flat",
            ", ".join(f"{g:+d}" for g in fd_growth) or "-",
            same_workers and all(g <= 0 for g in fd_growth),
        ),
        ("errors and timeouts", "0", str(errors), errors == 0),
        (
            "p99, last minute vs first",
            f"<= {P99_GROWTH_LIMIT}x",
            f"{p99_factor:.2f}x ({last['p99_ms']:.1f} vs {first['p99_ms']:.1f} ms)",
            p99_factor <= P99_GROWTH_LIMIT,
        ),
    ]
    return [dict(zip(("name", "requirement", "measured", "met"), row, strict=True)) for row in rows]


def write(result: dict[str, Any], out: Path, command: str) -> None:
    (out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    minutes = [
        {
            **m,
            "rss": ", ".join(f"{v:.1f}" for v in m["rss_mb"].values()),
            "fds": ", ".join(str(v) for v in m["open_fds"].values()),
        }
        for m in result["minutes"]
    ]
    checks = [{**v, "met": "yes" if v["met"] else "**no**"} for v in result["verdicts"]]
    text = [
        "# Soak results",
        "",
        f"Generated by `{command}`: config 1 (gunicorn, 2 workers), wrk with "
        f"{result['connections']} paced connections, one 60 s run per minute, at about "
        f"{100 * LOAD_SHARE:.0f} % of the {result['max_rps']:.0f} req/s measured just before "
        f"(target {result['target_rps']:.0f} req/s). The first minute is the warm-up: growth "
        "is measured from its end. Raw data: `soak.json`.",
        "",
        *columns(MINUTE_COLUMNS, minutes),
        *columns(CHECK_COLUMNS, checks),
    ]
    (out / "SOAK.md").write_text("\n".join(text))
    say(f"wrote {out / 'SOAK.md'} and {out / 'soak.json'}")

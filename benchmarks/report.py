"""From results.json's raw samples (the one source): medians over rounds, ratios to this
deployment, the issue's targets; rendered as RESULTS.md and as the console table."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks.harness import WORKLOADS
from benchmarks.servers import BASELINE, BENCH_DIR

ANALYSIS_FILE = BENCH_DIR / "ANALYSIS.md"
PLOT_NAME = "results.png"
SCALING_PLOT_NAME = "scaling.png"
_MEDIANS: tuple[str, ...] = ("rps", "p50_ms", "p99_ms", "wrk_cpu_pct", "system_cpu_pct")
_MEDIANS += ("steal_pct", "server_cpu_pct", "foreign_cpu_pct", "server_cpu_ms_per_request")
BEFORE = "cand-before"  # the code before issue #12, run as `--candidate before=DIR`
PEERS = {
    "uvicorn-w2": "uvicorn --workers 2",
    "gunicorn-asgi": "gunicorn -k asgi",
    "granian": "granian --workers 2",
}
Row = dict[str, Any]
Key = tuple[str, str]
# The scaling curves: config 1's one-row reads against connections and against workers.
CURVES: dict[str, dict[Key, int]] = {
    "connections": {
        (BASELINE, workload): n for workload, n in (("c10", 10), ("read", 50), ("c200", 200))
    }
    | {(BASELINE, "c1000"): 1000},
    "workers": {("gunicorn-1w", "read"): 1, (BASELINE, "read"): 2, ("gunicorn-4w", "read"): 4},
}


def by_key(summaries: list[Row]) -> dict[Key, Row]:
    return {(s["config"], s["workload"]): s for s in summaries}


def summarize(samples: list[Row]) -> list[Row]:
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    for sample in samples:
        groups[sample["config"], sample["workload"]].append(sample)
    summaries = []
    for (config, workload), group in groups.items():
        sessions = [s["new_pg_sessions"] for s in group if s["new_pg_sessions"] is not None]
        extra_keys = sorted({key for s in group for key in s["extra"]})
        summaries.append(
            {
                "config": config,
                "workload": workload,
                "rounds": len(group),
                **{key: statistics.median(s[key] for s in group) for key in _MEDIANS},
                "p99_worst_ms": max(s["p99_ms"] for s in group),
                "errors": sum(s["errors"] for s in group),  # summed over rounds
                "timeouts": sum(s["timeouts"] for s in group),
                "new_pg_sessions_max": max(sessions) if sessions else None,
                "ratio_to_baseline": None,
                "extra": {
                    key: statistics.median(s["extra"][key] for s in group if key in s["extra"])
                    for key in extra_keys
                },
            }
        )
    found = by_key(summaries)
    for summary in summaries:
        baseline = found.get((BASELINE, summary["workload"]))
        if baseline is not None and baseline["rps"]:
            summary["ratio_to_baseline"] = summary["rps"] / baseline["rps"]
    return summaries


def summarize_servers(samples: list[Row]) -> list[Row]:
    groups: dict[str, list[Row]] = defaultdict(list)
    for sample in samples:
        groups[sample["config"]].append(sample)
    result = []
    for config, group in groups.items():
        rss = [mb for s in group for mb in s["worker_rss_mb"]]
        starts = [s["start_to_first_200_s"] for s in group]
        result.append(
            {
                "config": config,
                "workers": group[0]["workers"],
                "starts": len(group),
                "start_median_s": statistics.median(starts),
                "start_max_s": max(starts),
                "rss_max_mb": max(rss, default=0.0),
                "rss_median_mb": statistics.median(rss) if rss else 0.0,
            }
        )
    return result


def _over(value: float, limit: float, unit: str) -> str:
    if value <= limit:
        return ""
    return f"{value - limit:.1f} {unit} ({100 * (value / limit - 1):.0f} %) over"


class Targets:
    """The issue's targets, each as a row: what was measured, whether it is met, the gap
    ("not measured" when a run it needs is missing)."""

    def __init__(self, summaries: list[Row], servers: list[Row], pool_total: int) -> None:
        self.got = by_key(summaries)
        self.server = next((s for s in servers if s["config"] == BASELINE), None)
        self.pool_total = pool_total
        self.rows: list[Row] = []

    def add(self, name: str, req: str, measured: str, met: bool | None, gap: str = "") -> None:
        self.rows.append(dict(name=name, requirement=req, measured=measured, met=met, gap=gap))

    def missing(self, name: str, requirement: str, what: str) -> None:
        self.add(name, requirement, f"not measured ({what} not run)", None)

    def up_to(
        self, name: str, req: str, measured: str, value: float, limit: float, *, unit: str
    ) -> None:
        self.add(name, req, measured, value <= limit, _over(value, limit, unit))

    def none_over(self, name: str, req: str, measured: str, excess: int, what: str) -> None:
        self.add(name, req, measured, excess <= 0, f"{excess} {what}" if excess > 0 else "")

    def ratio(self, name: str, requirement: str, other: str, limit: float, workload: str) -> None:
        a, b = self.got.get((BASELINE, workload)), self.got.get((other, workload))
        if a is None or b is None or not b["rps"]:
            return self.missing(name, requirement, f"{workload} on {BASELINE} and {other}")
        value = a["rps"] / b["rps"]
        # Server CPU per request is the figure least moved by others' load on the machine.
        ours, theirs = a["server_cpu_ms_per_request"], b["server_cpu_ms_per_request"]
        cpu = f"; server CPU/req {theirs / ours:.2f}x ({ours:.2f} vs {theirs:.2f} ms)"
        measured = f"{value:.2f}x ({a['rps']:.0f} / {b['rps']:.0f} req/s{cpu if ours else ''})"
        short = f"{limit - value:.2f}x short ({100 * (1 - value / limit):.0f} % below)"
        self.add(name, requirement, measured, value >= limit, "" if value >= limit else short)

    def median_ms(self, name: str, requirement: str, key: Key, field: str, limit: int) -> None:
        if (s := self.got.get(key)) is None:
            return self.missing(name, requirement, f"{key[1]} on {key[0]}")
        value = s["extra"].get(field, s.get(field))
        measured = f"{value:.1f} ms (median of {s['rounds']} rounds)"
        self.up_to(name, requirement, measured, value, limit, unit="ms")

    def build(self) -> list[Row]:
        base, ratio, median_ms = BASELINE, self.ratio, self.median_ms
        requirement = "read req/s >= 0.30x floor 5a"
        ratio("read vs raw-asyncpg floor", requirement, "floor-asyncpg", 0.3, "read")
        ratio("read vs code before", "read req/s >= 2.0x cand-before", BEFORE, 2.0, "read")
        median_ms("read p99", "p99 <= 50 ms", (base, "read"), "p99_ms", 50)
        self.read_errors()
        requirement = "user req/s >= 2.0x cand-before"
        ratio("unauthenticated read vs code before", requirement, BEFORE, 2.0, "user")
        median_ms("unauthenticated read p99", "p99 <= 50 ms", (base, "user"), "p99_ms", 50)
        ratio("insert vs code before", "insert req/s >= 1.6x", BEFORE, 1.6, "insert")
        median_ms("insert p99", "p99 <= 60 ms", (base, "insert"), "p99_ms", 60)
        ratio("list of 50 vs code before", "list req/s >= 1.6x", BEFORE, 1.6, "list")
        self.signups()
        ratio("metrics on vs off", "read req/s >= 0.90x", "gunicorn-nometrics", 0.9, "read")
        for peer, label in PEERS.items():
            ratio(f"read vs {label}", f"read req/s >= 1.0x {peer}", peer, 1.0, "read")
        self.sessions_and_servers()
        return self.rows

    def read_errors(self) -> None:
        # The steady run is one-row reads too (from a cold start): its failures count.
        name, requirement = "read errors", "zero errors and timeouts"
        runs = ((BASELINE, "read"), (BASELINE, "steady"))
        if not (reads := [s for key in runs if (s := self.got.get(key)) is not None]):
            return self.missing(name, requirement, "read on config 1")
        errors, timeouts = (sum(s[key] for s in reads) for key in ("errors", "timeouts"))
        measured = f"{errors} errors, {timeouts} timeouts (read + steady runs, all rounds)"
        self.none_over(name, requirement, measured, errors + timeouts, "failed requests")

    def signups(self) -> None:
        """Reads beside sign-ups: the storm on config 1, then issue 13's acceptance (48 sign-up
        clients at cost 12 against 4 workers), and /metrics scraped under load there."""
        name, requirement = "reads during sign-ups", "p99 <= 2x reads alone"
        storm, read = self.got.get((BASELINE, "signup")), self.got.get((BASELINE, "read"))
        if storm is None or read is None:
            self.missing(name, requirement, "signup/read")
        else:
            factor = storm["p99_ms"] / read["p99_ms"] if read["p99_ms"] else float("inf")
            measured = f"{factor:.2f}x ({storm['p99_ms']:.1f} ms vs {read['p99_ms']:.1f} ms)"
            self.up_to(name, requirement, measured, factor, 2, unit="x")
        name, requirement = "sign-up flood, slowest answer", "every answer <= 2.5 s"
        self.median_ms(name, requirement, ("gunicorn-4w", "flood"), "flood_max_ms", 2500)
        name, requirement = "reads during the sign-up flood", "p99 <= max(3x reads alone, 25 ms)"
        flood, read = (self.got.get(("gunicorn-4w", key)) for key in ("flood", "read"))
        if flood is None or read is None:
            self.missing(name, requirement, "flood/read on 1x4")
        else:
            limit, p99 = max(3 * read["p99_ms"], 25.0), flood["p99_ms"]
            measured = f"{p99:.1f} ms vs limit {limit:.1f} ms (reads alone {read['p99_ms']:.1f})"
            self.up_to(name, requirement, measured, p99, limit, unit="ms")
        name = "/metrics scrape p99, 4 workers"
        self.median_ms(name, "p99 <= 50 ms", ("gunicorn-4w", "scrape"), "scrape_p99_ms", 50)

    def sessions_and_servers(self) -> None:
        name, requirement = "1000 connections", "no errors (timeouts only where explained)"
        if (c1000 := self.got.get((BASELINE, "c1000"))) is None:
            self.missing(name, "no errors", "c1000 on config 1")
        else:
            errors, timeouts, p99 = c1000["errors"], c1000["timeouts"], c1000["p99_ms"]
            measured = f"{errors} errors, {timeouts} timeouts (wrk 2 s), p99 {p99:.0f} ms"
            self.none_over(name, requirement, measured, errors, "errors")
        pool = self.pool_total
        name, requirement = "new PG connections, steady run", f"<= total pool size ({pool})"
        steady = self.got.get((BASELINE, "steady"))
        if steady is None or (value := steady["new_pg_sessions_max"]) is None:
            self.missing(name, requirement, "steady on config 1")
        else:
            measured = f"{value} (worst of {steady['rounds']} rounds, pool fill included)"
            self.none_over(name, requirement, measured, value - pool, "over")
        rss_target = ("RSS per worker", "<= 120 MB after the run")
        start_target = ("start to first 200", "<= 2 s, 2 workers")
        if (server := self.server) is None:
            self.missing(*rss_target, "config 1")
            return self.missing(*start_target, "config 1")
        rss, start, starts = server["rss_max_mb"], server["start_max_s"], server["starts"]
        measured = f"{rss:.0f} MB worst worker, {server['rss_median_mb']:.0f} MB median"
        self.up_to(*rss_target, measured, rss, 120, unit="MB")
        measured = f"{server['start_median_s']:.2f} s median, {start:.2f} s worst ({starts} starts)"
        self.up_to(*start_target, measured, start, 2, unit="s")


def analyse(document: Row) -> Row:
    """(Re)compute medians, ratios and targets from the raw samples in `document`."""
    summaries = summarize(document["samples"])
    servers = summarize_servers(document["server_samples"])
    found = Targets(summaries, servers, document["run"]["pool_total"]).build()
    return {**document, "summaries": summaries, "servers": servers, "targets": found}


_MET = {True: "yes", False: "**no**", None: "n/a"}


def _ordered(document: Row) -> list[Row]:
    configs, workloads = list(document["configs"]), list(WORKLOADS)
    return sorted(
        document["summaries"],
        key=lambda s: (workloads.index(s["workload"]), configs.index(s["config"])),
    )


MAIN_COLUMNS = {
    "workload": "{workload}",
    "config": "{config}",
    "req/s": "{rps:.0f}",
    "x config 1": "{ratio}",
    "p50 ms": "{p50_ms:.1f}",
    "p99 ms": "{p99_ms:.1f}",
    "errors": "{errors}",
    "timeouts": "{timeouts}",
    "new PG conns": "{sessions}",
    "server CPU ms/req": "{server_cpu_ms_per_request:.2f}",
    "wrk CPU %": "{wrk_cpu_pct:.0f}",
    "machine CPU %": "{system_cpu_pct:.0f}",
    "others' CPU %": "{foreign_cpu_pct:.0f}",
}


def _main_rows(document: Row) -> list[tuple[str, ...]]:
    rows = []
    for s in _ordered(document):
        ratio, sessions = s["ratio_to_baseline"], s["new_pg_sessions_max"]
        ratio = "-" if ratio is None else f"{ratio:.2f}"
        row = {**s, "ratio": ratio, "sessions": "-" if sessions is None else sessions}
        rows.append(tuple(f.format(**row) for f in MAIN_COLUMNS.values()))
    return rows


def console_table(document: Row) -> str:
    rows = [tuple(MAIN_COLUMNS), *_main_rows(document)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(MAIN_COLUMNS))]
    lines = ["  ".join(cell.rjust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    for t in document["targets"]:
        verdict = {True: "MET ", False: "MISS", None: "n/a "}[t["met"]]
        gap = f"  [{t['gap']}]" if t["gap"] else ""
        lines.append(f"{verdict} {t['name']}: {t['measured']} (target {t['requirement']}){gap}")
    return "\n".join(lines)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return [*lines, *("| " + " | ".join(row) + " |" for row in rows), ""]


SIDE_LOADS = {  # workload: (side load, what was measured, from the summary's extras)
    "signup": (
        "sign-ups beside the reads",
        "{signup_rps:.1f} req/s, p50 {signup_p50_ms:.0f} ms, p99 {signup_p99_ms:.0f} ms, "
        "{signup_errors:.0f} failed (median per round)",
    ),
    "scrape": (
        "/metrics scrapes beside the reads",
        "{scrape_count:.0f} scrapes per round, p50 {scrape_p50_ms:.1f} ms, p99 "
        "{scrape_p99_ms:.1f} ms, max {scrape_max_ms:.1f} ms, {scrape_failures:.0f} failed "
        "(median per round)",
    ),
    "flood": (
        "48 sign-up clients beside the reads",
        "{flood_rps:.1f} answers/s, p99 {flood_p99_ms:.0f} ms, max {flood_max_ms:.0f} ms, "
        "{flood_errors:.0f} non-2xx or failed (503s are the admission control's; median per "
        "round)",
    ),
}


def _extras_rows(document: Row) -> list[tuple[str, ...]]:
    return [
        (s["config"], SIDE_LOADS[w][0], SIDE_LOADS[w][1].format(**s["extra"]))
        for s in _ordered(document)
        if (w := s["workload"]) in SIDE_LOADS
    ]


def curve(document: Row, against: str) -> list[Row]:
    """The rows of one scaling curve that the run measured."""
    found = by_key(document["summaries"])
    return [{against: x, **found[key]} for key, x in CURVES[against].items() if key in found]


def columns(columns: dict[str, str], rows: list[Row]) -> list[str]:
    """A table from {header: format string over a row's keys}."""
    return _table(
        tuple(columns), [tuple(f.format(**row) for f in columns.values()) for row in rows]
    )


CONNECTION_COLUMNS = {
    "connections": "{connections}",
    "req/s": "{rps:.0f}",
    "p50 ms": "{p50_ms:.1f}",
    "p99 ms": "{p99_ms:.1f}",
    "errors": "{errors}",
    "timeouts": "{timeouts}",
    "server CPU ms/req": "{server_cpu_ms_per_request:.2f}",
}
WORKER_COLUMNS = {
    "workers (50 connections)": "{workers}",
    "req/s": "{rps:.0f}",
    "p99 ms": "{p99_ms:.1f}",
    "server CPU ms/req": "{server_cpu_ms_per_request:.2f}",
    "machine CPU %": "{system_cpu_pct:.0f}",
}
TARGET_COLUMNS = {key: f"{{{key}}}" for key in ("target", "requirement", "measured", "met", "gap")}
SERVER_COLUMNS = {
    "config": "{config}",
    "workers": "{workers}",
    "starts": "{starts}",
    "start to first 200 (median / worst)": "{start_median_s:.2f} s / {start_max_s:.2f} s",
    "RSS per worker after its runs (median / worst)": "{rss_median_mb:.0f} MB / "
    "{rss_max_mb:.0f} MB",
}


def markdown(document: Row) -> str:
    run, machine = document["run"], document["machine"]
    out = [
        "# Benchmark results",
        "",
        f"Generated by `{run['command']}` (`./dev bench`), run started {run['started']}, "
        f"took {run['elapsed_minutes']:.1f} min. Raw data: `results.json`; plot below.",
        "Regenerate this file from results.json alone with `python -m benchmarks.run "
        "--report-only`.",
        "",
        "## Machine",
        "",
        *_table(("", ""), [(key, str(value)) for key, value in machine.items()]),
        "## Method",
        "",
        f"- {run['rounds']} rounds; every round starts each configuration fresh, in a rotated "
        "order, on the same database and seed data, so configurations are interleaved in time.",
        f"- Load: `wrk -t1 -c{run['connections']}` for {run['duration_s']:.0f} s per run "
        f"(steady run: {run['steady_duration_s']:.0f} s from a cold start), 2 s timeout, after a "
        f"{run['warmup_s']:.0f} s warm-up per server start (not before the steady run). "
        f"Sign-up storm: a second wrk with {run['signup_connections']} connections posting "
        "/users (bcrypt cost 12). Scrape: GET /metrics on a fresh connection every "
        f"{1000 * run['scrape_interval_s']:.0f} ms.",
        f"- Seed: {run['seed_users']} users with {run['seed_items_per_user']} items each, "
        "created through the API; each wrk request picks a random (user token, own item).",
        "- Latency is wrk's (closed loop: each connection waits for its answer). req/s, p50 and "
        "p99 are medians over rounds; errors and timeouts are summed over rounds; new PG conns "
        "is the worst round's pg_stat_database.sessions delta; wrk CPU is wrk's own CPU time "
        "over the run (100 % = one core); machine CPU is all cores (100 % = every core busy); "
        "others' CPU is what the machine spent beyond the server, PostgreSQL, wrk and this "
        "harness (other users of the shared machine, and kernel threads such as ksoftirqd "
        "that carry loopback traffic at high request rates), same scale. server CPU ms/req is "
        "the server processes' CPU time divided by the main load's requests: the least "
        "noise-sensitive efficiency figure here. Requests wrk timed out (2 s) are counted as "
        "timeouts and are not in its percentiles. With about 90 scrapes per round, a round's "
        "/metrics p99 is its slowest scrape.",
        f"- Service settings: {run['service_settings']}.",
        "",
        "Configurations:",
        "",
        *[f"- `{key}`: {label}" for key, label in document["configs"].items()],
        "",
        "## Results (medians)",
        "",
        *_table(tuple(MAIN_COLUMNS), _main_rows(document)),
        *_table(("config", "side load", "measured"), _extras_rows(document)),
        "## Targets",
        "",
        *columns(
            TARGET_COLUMNS,
            [
                {**t, "target": t["name"], "met": _MET[t["met"]], "gap": t["gap"] or "-"}
                for t in document["targets"]
            ],
        ),
        "## Server start and memory",
        "",
        *columns(SERVER_COLUMNS, document["servers"]),
        f"![req/s and p99 per configuration]({PLOT_NAME})",
        "",
    ]
    by_connections, by_workers = curve(document, "connections"), curve(document, "workers")
    if by_connections or by_workers:
        out += ["## Scaling (config 1, one-row reads)", ""]
        out += columns(CONNECTION_COLUMNS, by_connections) if by_connections else []
        out += columns(WORKER_COLUMNS, by_workers) if by_workers else []
        out += [f"![req/s and p99 against connections and workers]({SCALING_PLOT_NAME})", ""]
    if document["failures"]:
        out += ["## Failures during the run", "", *[f"- {f}" for f in document["failures"]], ""]
    if ANALYSIS_FILE.exists():
        analysis = ANALYSIS_FILE.read_text().rstrip()
        if f"<!-- run: {run['started']} -->" not in analysis:
            out += [
                "> **Note:** the analysis below was written by hand for an earlier run; the "
                "numbers above are newer. Update benchmarks/ANALYSIS.md.",
                "",
            ]
        out += [analysis, ""]
    return "\n".join(out)


def write(document: Row, directory: Path) -> None:
    (directory / "results.json").write_text(json.dumps(document, indent=1) + "\n")
    (directory / "RESULTS.md").write_text(markdown(document))

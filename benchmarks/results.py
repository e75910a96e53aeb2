"""Medians over rounds, ratios to this deployment, and the issue's targets."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from benchmarks.configs import BASELINE
from benchmarks.workloads import Sample

# The code before issue #12, run as `--candidate before=DIR` in the same run.
BEFORE = "cand-before"
PEERS = {
    "uvicorn-w2": "uvicorn --workers 2",
    "gunicorn-asgi": "gunicorn -k asgi",
    "granian": "granian --workers 2",
}


@dataclass(frozen=True, slots=True)
class ServerSample:
    config: str
    round: int
    workers: int
    start_to_first_200_s: float
    worker_rss_mb: list[float]


@dataclass(slots=True)
class Summary:
    config: str
    workload: str
    rounds: int
    rps: float
    p50_ms: float
    p99_ms: float
    p99_worst_ms: float
    errors: int  # summed over rounds
    timeouts: int  # summed over rounds
    new_pg_sessions_max: int | None
    wrk_cpu_pct: float
    system_cpu_pct: float
    steal_pct: float
    server_cpu_pct: float
    foreign_cpu_pct: float
    server_cpu_ms_per_request: float
    ratio_to_baseline: float | None = None
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ServerSummary:
    config: str
    workers: int
    starts: int
    start_median_s: float
    start_max_s: float
    rss_max_mb: float
    rss_median_mb: float


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    requirement: str
    measured: str
    met: bool | None  # None: not measured in this run
    gap: str


def summarize(samples: list[Sample]) -> list[Summary]:
    groups: dict[tuple[str, str], list[Sample]] = {}
    for sample in samples:
        groups.setdefault((sample.config, sample.workload), []).append(sample)
    summaries = []
    for (config, workload), group in groups.items():
        sessions = [s.new_pg_sessions for s in group if s.new_pg_sessions is not None]
        extra_keys = sorted({key for s in group for key in s.extra})
        summaries.append(
            Summary(
                config=config,
                workload=workload,
                rounds=len(group),
                rps=statistics.median(s.rps for s in group),
                p50_ms=statistics.median(s.p50_ms for s in group),
                p99_ms=statistics.median(s.p99_ms for s in group),
                p99_worst_ms=max(s.p99_ms for s in group),
                errors=sum(s.errors for s in group),
                timeouts=sum(s.timeouts for s in group),
                new_pg_sessions_max=max(sessions) if sessions else None,
                wrk_cpu_pct=statistics.median(s.wrk_cpu_pct for s in group),
                system_cpu_pct=statistics.median(s.system_cpu_pct for s in group),
                steal_pct=statistics.median(s.steal_pct for s in group),
                server_cpu_pct=statistics.median(s.server_cpu_pct for s in group),
                foreign_cpu_pct=statistics.median(s.foreign_cpu_pct for s in group),
                server_cpu_ms_per_request=statistics.median(
                    s.server_cpu_ms_per_request for s in group
                ),
                extra={
                    key: statistics.median(s.extra[key] for s in group if key in s.extra)
                    for key in extra_keys
                },
            )
        )
    by_key = {(s.config, s.workload): s for s in summaries}
    for summary in summaries:
        baseline = by_key.get((BASELINE, summary.workload))
        if baseline is not None and baseline.rps:
            summary.ratio_to_baseline = summary.rps / baseline.rps
    return summaries


def summarize_servers(samples: list[ServerSample]) -> list[ServerSummary]:
    groups: dict[str, list[ServerSample]] = {}
    for sample in samples:
        groups.setdefault(sample.config, []).append(sample)
    result = []
    for config, group in groups.items():
        rss = [mb for s in group for mb in s.worker_rss_mb]
        starts = [s.start_to_first_200_s for s in group]
        result.append(
            ServerSummary(
                config=config,
                workers=group[0].workers,
                starts=len(group),
                start_median_s=statistics.median(starts),
                start_max_s=max(starts),
                rss_max_mb=max(rss, default=0.0),
                rss_median_mb=statistics.median(rss) if rss else 0.0,
            )
        )
    return result


def _over(value: float, limit: float, unit: str) -> str:
    if value <= limit:
        return ""
    return f"{value - limit:.1f} {unit} ({100 * (value / limit - 1):.0f} %) over"


def _under(value: float, limit: float) -> str:
    if value >= limit:
        return ""
    return f"{limit - value:.2f}x short ({100 * (1 - value / limit):.0f} % below)"


class TargetBuilder:
    def __init__(
        self, summaries: list[Summary], servers: list[ServerSummary], pool_total: int
    ) -> None:
        self.by_key = {(s.config, s.workload): s for s in summaries}
        self.servers = {s.config: s for s in servers}
        self.pool_total = pool_total
        self.targets: list[Target] = []

    def _missing(self, name: str, requirement: str, what: str) -> None:
        self.targets.append(Target(name, requirement, f"not measured ({what} not run)", None, ""))

    def ratio(
        self,
        name: str,
        requirement: str,
        top: str,
        bottom: str,
        limit: float,
        *,
        workload: str = "read",
    ) -> None:
        a, b = self.by_key.get((top, workload)), self.by_key.get((bottom, workload))
        if a is None or b is None or not b.rps:
            self._missing(name, requirement, f"{workload} on {top} and {bottom}")
            return
        value = a.rps / b.rps
        # Server CPU per request is the figure least moved by others' load on the machine.
        cpu = (
            f"; server CPU/req {b.server_cpu_ms_per_request / a.server_cpu_ms_per_request:.2f}x"
            f" ({a.server_cpu_ms_per_request:.2f} vs {b.server_cpu_ms_per_request:.2f} ms)"
            if a.server_cpu_ms_per_request
            else ""
        )
        measured = f"{value:.2f}x ({a.rps:.0f} / {b.rps:.0f} req/s{cpu})"
        self.targets.append(
            Target(name, requirement, measured, value >= limit, _under(value, limit))
        )

    def at_most(
        self, name: str, requirement: str, key: tuple[str, str], value_of: str, limit: float
    ) -> None:
        summary = self.by_key.get(key)
        if summary is None:
            self._missing(name, requirement, f"{key[1]} on {key[0]}")
            return
        value = summary.extra[value_of] if value_of in summary.extra else getattr(summary, value_of)
        measured = f"{value:.1f} ms (median of {summary.rounds} rounds)"
        self.targets.append(
            Target(name, requirement, measured, value <= limit, _over(value, limit, "ms"))
        )

    def build(self) -> list[Target]:
        base = BASELINE
        self.ratio(
            "read vs raw-asyncpg floor", "read req/s >= 0.30x floor 5a", base, "floor-asyncpg", 0.3
        )
        self.ratio("read vs code before", "read req/s >= 2.0x cand-before", base, BEFORE, 2.0)
        self.at_most("read p99", "p99 <= 50 ms", (base, "read"), "p99_ms", 50)
        read = self.by_key.get((base, "read"))
        self._read_errors(base, read)
        self.ratio(
            "unauthenticated read vs code before",
            "user req/s >= 2.0x cand-before",
            base,
            BEFORE,
            2.0,
            workload="user",
        )
        self.at_most("unauthenticated read p99", "p99 <= 50 ms", (base, "user"), "p99_ms", 50)
        self.ratio(
            "insert vs code before", "insert req/s >= 1.6x", base, BEFORE, 1.6, workload="insert"
        )
        self.at_most("insert p99", "p99 <= 60 ms", (base, "insert"), "p99_ms", 60)
        self.ratio(
            "list of 50 vs code before", "list req/s >= 1.6x", base, BEFORE, 1.6, workload="list"
        )
        storm = self.by_key.get((base, "signup"))
        if storm is None or read is None:
            self._missing("reads during sign-ups", "p99 <= 2x reads alone", "signup/read")
        else:
            factor = storm.p99_ms / read.p99_ms if read.p99_ms else float("inf")
            self.targets.append(
                Target(
                    "reads during sign-ups",
                    "p99 <= 2x reads alone",
                    f"{factor:.2f}x ({storm.p99_ms:.1f} ms vs {read.p99_ms:.1f} ms)",
                    factor <= 2,
                    _over(factor, 2, "x"),
                )
            )
        self._flood()
        self.at_most(
            "/metrics scrape p99, 4 workers",
            "p99 <= 50 ms",
            ("gunicorn-4w", "scrape"),
            "scrape_p99_ms",
            50,
        )
        self.ratio("metrics on vs off", "read req/s >= 0.90x", base, "gunicorn-nometrics", 0.9)
        for peer, label in PEERS.items():
            self.ratio(f"read vs {label}", f"read req/s >= 1.0x {peer}", base, peer, 1.0)
        self._no_errors_at_1000(base)
        self._sessions(base)
        self._server_targets(base)
        return self.targets

    def _flood(self) -> None:
        """Issue 13's acceptance: 48 sign-up clients at cost 12 against 4 workers."""
        self.at_most(
            "sign-up flood, slowest answer",
            "every answer <= 2.5 s",
            ("gunicorn-4w", "flood"),
            "flood_max_ms",
            2500,
        )
        flood = self.by_key.get(("gunicorn-4w", "flood"))
        read = self.by_key.get(("gunicorn-4w", "read"))
        requirement = "p99 <= max(3x reads alone, 25 ms)"
        if flood is None or read is None:
            self._missing("reads during the sign-up flood", requirement, "flood/read on 1x4")
            return
        limit = max(3 * read.p99_ms, 25.0)
        self.targets.append(
            Target(
                "reads during the sign-up flood",
                requirement,
                f"{flood.p99_ms:.1f} ms vs limit {limit:.1f} ms (reads alone {read.p99_ms:.1f})",
                flood.p99_ms <= limit,
                _over(flood.p99_ms, limit, "ms"),
            )
        )

    def _read_errors(self, base: str, read: Summary | None) -> None:
        # The steady run is one-row reads too (from a cold start): its failures count.
        reads = [s for s in (read, self.by_key.get((base, "steady"))) if s is not None]
        if not reads:
            self._missing("read errors", "zero errors and timeouts", "read on config 1")
            return
        errors = sum(s.errors for s in reads)
        timeouts = sum(s.timeouts for s in reads)
        self.targets.append(
            Target(
                "read errors",
                "zero errors and timeouts",
                f"{errors} errors, {timeouts} timeouts (read + steady runs, all rounds)",
                errors + timeouts == 0,
                "" if errors + timeouts == 0 else f"{errors + timeouts} failed requests",
            )
        )

    def _no_errors_at_1000(self, base: str) -> None:
        run = self.by_key.get((base, "c1000"))
        if run is None:
            self._missing("1000 connections", "no errors", "c1000 on config 1")
            return
        self.targets.append(
            Target(
                "1000 connections",
                "no errors (timeouts only where explained)",
                f"{run.errors} errors, {run.timeouts} timeouts (wrk 2 s), p99 {run.p99_ms:.0f} ms",
                run.errors == 0,
                "" if run.errors == 0 else f"{run.errors} errors",
            )
        )

    def _sessions(self, base: str) -> None:
        steady = self.by_key.get((base, "steady"))
        requirement = f"<= total pool size ({self.pool_total})"
        if steady is None or steady.new_pg_sessions_max is None:
            self._missing("new PG connections, steady run", requirement, "steady on config 1")
            return
        value = steady.new_pg_sessions_max
        self.targets.append(
            Target(
                "new PG connections, steady run",
                requirement,
                f"{value} (worst of {steady.rounds} rounds, pool fill included)",
                value <= self.pool_total,
                "" if value <= self.pool_total else f"{value - self.pool_total} over",
            )
        )

    def _server_targets(self, base: str) -> None:
        server = self.servers.get(base)
        if server is None:
            self._missing("RSS per worker", "<= 120 MB after the run", "config 1")
            self._missing("start to first 200", "<= 2 s, 2 workers", "config 1")
            return
        self.targets.append(
            Target(
                "RSS per worker",
                "<= 120 MB after the run",
                f"{server.rss_max_mb:.0f} MB worst worker, {server.rss_median_mb:.0f} MB median",
                server.rss_max_mb <= 120,
                _over(server.rss_max_mb, 120, "MB"),
            )
        )
        self.targets.append(
            Target(
                "start to first 200",
                "<= 2 s, 2 workers",
                f"{server.start_median_s:.2f} s median, {server.start_max_s:.2f} s worst "
                f"({server.starts} starts)",
                server.start_max_s <= 2,
                _over(server.start_max_s, 2, "s"),
            )
        )

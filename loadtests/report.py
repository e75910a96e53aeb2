"""The proof's report: report.md (tables and plots) and summary.json in the run's directory,
and the summary printed at the end. The plots are matplotlib's, rendered to PNG without a
display."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sized
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from loadtests import gates, reconcile
from loadtests.reconcile import Check, RouteRow, WorkerRow
from tooling.ledger import Ledger
from tooling.metrics import Snapshot


@dataclass
class ProofResult:
    setup: dict[str, str]
    checks: list[Check]
    ledger: Ledger
    verdict: dict[str, Any]  # Locust's gates.json
    routes: list[RouteRow] = field(default_factory=list)
    workers: list[WorkerRow] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed is not False for check in self.checks)


def _table(header: list[str], rows: Iterable[Iterable[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return [*lines, *("| " + " | ".join(map(str, row)) + " |" for row in rows), ""]


def _scenario_rows(verdict: dict[str, Any]) -> list[list[object]]:
    def gated(figures: dict[str, float], gate: str, name: str) -> str:
        most = gates.limit(verdict["gates"], gate, name)
        return f"{figures[gate]:.0f}" + (f" (≤ {most:g})" if most is not None else "")

    return [
        [
            *(name, s["requests"], s["failures"], f"{s['p50_ms']:.0f}"),
            *(gated(s, "p95_ms", name), gated(s, "p99_ms", name), f"{s['max_ms']:.0f}"),
        ]
        for name, s in sorted(verdict["figures"]["scenarios"].items())
    ]


def markdown(result: ProofResult) -> str:
    ledger, verdict = result.ledger, result.verdict
    lines = [f"# Concurrency proof: {'PASS' if result.passed else 'FAIL'}", ""]
    lines += _table(["Setting", "Value"], result.setup.items())
    lines += ["## Checks", ""]
    lines += _table(
        ["Check", "Result", "Detail"],
        ([c.name, f"**{c.label}**", c.detail.replace("|", "/")] for c in result.checks),
    )
    lines += ["## Requests per route: Locust vs the server's /metrics", ""]
    lines += _table(
        ["Method", "Route", "Locust", "Server", ""],
        (
            [r.method, f"`{r.route}`", r.locust, r.server, "ok" if r.locust == r.server else "≠"]
            for r in result.routes
        ),
    )
    lines += ["GET /metrics is the proof's own sampling (its count is the number of scrapes).", ""]
    lines += ["## Requests per worker", ""]
    lines += _table(
        ["Worker slot", "Requests", "Share"],
        ([w.slot, w.requests, f"{w.share:.1%}"] for w in result.workers),
    )
    if verdict:
        lines += ["## Latency per scenario (ms) and gates", ""]
        header = ["Scenario", "Requests", "Failures", "p50", "p95", "p99", "max"]
        lines += _table(header, _scenario_rows(verdict))
        held = "held" if verdict["passed"] else "BREACHED: " + "; ".join(verdict["breaches"])
        figures = verdict["figures"]
        lines += [
            f"Throughput {figures['rps']:.1f} req/s; failure ratio {figures['fail_ratio']:.4f}; "
            f"gates {held}",
            "",
        ]
    created: list[tuple[str, Sized, Sized, Sized]] = [
        ("users", ledger.users_created, ledger.users_deleted, ledger.users_expected),
        ("items (POST /items)", ledger.items_created, ledger.items_deleted, ledger.items_expected),
    ]
    lines += ["## What Locust created and deleted", ""]
    lines += _table(
        ["Resource", "Created (201)", "Deleted (204)", "Should exist now"],
        ([name, *map(len, sets)] for name, *sets in created),
    )
    if result.plots:
        lines += ["## Plots", "", *(f"![{name}]({name})" for name in result.plots), ""]
    lines += [
        "Locust's own reports (latency and throughput over time, per request): "
        "[locust.html](locust.html), `locust_stats.csv`, "
        "`locust_stats_history.csv`, `locust_failures.csv`; logs: `*.log`.",
        "",
    ]
    return "\n".join(lines)


def write(result: ProofResult, out_dir: Path, say: Callable[[str], None]) -> None:
    """report.md and summary.json in `out_dir`, and the summary printed through `say`."""
    (out_dir / "report.md").write_text(markdown(result), encoding="utf-8")
    ledger = result.ledger
    summary = {
        "passed": result.passed,
        "setup": result.setup,
        "checks": [asdict(check) for check in result.checks],
        "routes": [asdict(row) for row in result.routes],
        "workers": [asdict(row) for row in result.workers],
        "gates": result.verdict,
        "created": {
            "users": len(ledger.users_created),
            "users_deleted": len(ledger.users_deleted),
            "items": len(ledger.items_created),
            "items_deleted": len(ledger.items_deleted),
            "hot_writes": sum(map(len, ledger.hot_values.values())),
        },
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    say("")
    for name, s in sorted(result.verdict.get("figures", {}).get("scenarios", {}).items()):
        say(
            f"  {name:<11} {s['requests']:>7} requests {s['failures']:>4} failed"
            f"   p50 {s['p50_ms']:>5.0f}  p95 {s['p95_ms']:>5.0f}  p99 {s['p99_ms']:>5.0f} ms"
        )
    shares = ", ".join(f"{w.slot}: {w.requests} ({w.share:.1%})" for w in result.workers)
    say(f"  per worker: {shares}")
    for check in result.checks:
        say(f"  {check.label}  {check.name}: {check.detail}")
    say(f"RESULT: {'PASS' if result.passed else 'FAIL'}")
    say(f"report: {out_dir / 'report.md'}")


def plots(samples: list[Snapshot], base: Snapshot, rows: list[WorkerRow], out: Path) -> list[str]:
    """What Locust's own HTML report cannot show: requests per gunicorn worker and each
    worker's database pool over time, as requests_per_worker.png and pool.png in `out`."""
    seconds = [s.taken_at - base.taken_at for s in samples]
    figure, (bars, lines) = plt.subplots(1, 2, figsize=(11, 4))
    bars.bar([row.slot for row in rows], [row.requests for row in rows], color="tab:blue")
    for index, row in enumerate(rows):
        bars.annotate(f"{row.share:.1%}", (index, row.requests), ha="center", va="bottom")
    bars.set(title="Requests per worker (whole run)", xlabel="worker slot", ylabel="requests")
    served = [reconcile.increase(s.worker_requests, base.worker_requests) for s in samples]
    for row in rows:
        lines.plot(seconds, [counts.get(row.slot, 0) for counts in served], label=row.slot)
    lines.set(title="Requests per worker over time", xlabel="seconds", ylabel="cumulative")
    lines.legend(title="worker")
    _save(figure, out / "requests_per_worker.png")

    figure, axis = plt.subplots(figsize=(11, 4))
    slots = sorted({slot for s in samples for slot in s.pool_checked_out})
    for slot in slots:
        checked_out = [s.pool_checked_out.get(slot, 0) for s in samples]
        axis.plot(seconds, checked_out, label=f"worker {slot}")
    in_progress = [sum(s.in_progress.values()) for s in samples]
    axis.plot(seconds, in_progress, "k:", label="requests in progress (all, incl. the scrape)")
    if samples:
        per_worker = sum(samples[-1].pool_size.values()) / max(len(slots), 1)
        axis.axhline(per_worker, color="grey", ls="--", label="pool size per worker")
    axis.set(title="Database pool: connections checked out", xlabel="seconds", ylabel="count")
    axis.legend(loc="upper right", fontsize="small")
    _save(figure, out / "pool.png")
    return ["requests_per_worker.png", "pool.png"]


def _save(figure: Any, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)

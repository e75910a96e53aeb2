"""The proof's report: report.md (tables and plots) and summary.json, in the run's directory."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from loadtests.reconcile import Check, RouteRow, WorkerRow
from tooling.ledger import Ledger


@dataclass
class ProofResult:
    setup: dict[str, str]
    checks: list[Check] = field(default_factory=list)
    routes: list[RouteRow] = field(default_factory=list)
    workers: list[WorkerRow] = field(default_factory=list)
    verdict: dict[str, Any] = field(default_factory=dict)  # Locust's gates.json
    ledger: Ledger | None = None
    plots: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed is not False for check in self.checks)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _scenario_rows(verdict: dict[str, Any]) -> list[list[str]]:
    figures = verdict.get("figures", {})
    limits = verdict.get("gates", {})
    rows = []
    for name, s in sorted(figures.get("scenarios", {}).items()):
        p95 = limits.get("p95_ms", {}).get(name, limits.get("p95_ms", {}).get("default"))
        p99 = limits.get("p99_ms", {}).get(name, limits.get("p99_ms", {}).get("default"))
        rows.append([
            name, str(s["requests"]), str(s["failures"]), f"{s['p50_ms']:.0f}",
            f"{s['p95_ms']:.0f} (≤ {p95:g})" if p95 is not None else f"{s['p95_ms']:.0f}",
            f"{s['p99_ms']:.0f} (≤ {p99:g})" if p99 is not None else f"{s['p99_ms']:.0f}",
            f"{s['max_ms']:.0f}",
        ])  # fmt: skip
    return rows


def markdown(result: ProofResult) -> str:
    lines = [f"# Concurrency proof: {'PASS' if result.passed else 'FAIL'}", ""]
    lines += _table(["Setting", "Value"], [[k, v] for k, v in result.setup.items()])
    lines += ["## Checks", ""]
    lines += _table(
        ["Check", "Result", "Detail"],
        [[c.name, f"**{c.label}**", c.detail.replace("|", "/")] for c in result.checks],
    )
    lines += ["## Requests per route: Locust vs the server's /metrics", ""]
    lines += _table(
        ["Method", "Route", "Locust", "Server", ""],
        [
            [r.method, f"`{r.route}`", str(r.locust), str(r.server), "ok" if r.matches else "≠"]
            for r in result.routes
        ],
    )
    lines += ["GET /metrics is the proof's own sampling (its count is the number of scrapes).", ""]
    lines += ["## Requests per worker", ""]
    lines += _table(
        ["Worker slot", "Requests", "Share"],
        [[w.slot, str(w.requests), f"{w.share:.1%}"] for w in result.workers],
    )
    if result.verdict:
        figures = result.verdict.get("figures", {})
        lines += ["## Latency per scenario (ms) and gates", ""]
        lines += _table(
            ["Scenario", "Requests", "Failures", "p50", "p95", "p99", "max"],
            _scenario_rows(result.verdict),
        )
        lines += [
            f"Throughput {figures.get('rps', 0):.1f} req/s; failure ratio "
            f"{figures.get('fail_ratio', 0):.4f}; gates "
            f"{'held' if result.verdict.get('passed') else 'BREACHED: '}"
            + "; ".join(result.verdict.get("breaches", [])),
            "",
        ]
    if result.ledger is not None:
        ledger = result.ledger
        lines += ["## What Locust created and deleted", ""]
        lines += _table(
            ["Resource", "Created (201)", "Deleted (204)", "Should exist now"],
            [
                ["users", str(len(ledger.users_created)), str(len(ledger.users_deleted)),
                 str(len(ledger.users_expected))],
                ["items (POST /items)", str(len(ledger.items_created)),
                 str(len(ledger.items_deleted)), str(len(ledger.items_expected))],
            ],
        )  # fmt: skip
    if result.plots:
        lines += ["## Plots", ""]
        lines += [f"![{name}]({name})" for name in result.plots] + [""]
    lines += [
        "Locust's own reports (latency and throughput over time, per request): "
        "[locust.html](locust.html), `locust_stats.csv`, "
        "`locust_stats_history.csv`, `locust_failures.csv`; logs: `*.log`.",
        "",
    ]
    return "\n".join(lines)


def write(result: ProofResult, out_dir: Path) -> Path:
    path = out_dir / "report.md"
    path.write_text(markdown(result), encoding="utf-8")
    summary = {
        "passed": result.passed,
        "setup": result.setup,
        "checks": [asdict(check) for check in result.checks],
        "routes": [asdict(row) for row in result.routes],
        "workers": [asdict(row) for row in result.workers],
        "gates": result.verdict,
        "created": {
            "users": len(result.ledger.users_created) if result.ledger else 0,
            "users_deleted": len(result.ledger.users_deleted) if result.ledger else 0,
            "items": len(result.ledger.items_created) if result.ledger else 0,
            "items_deleted": len(result.ledger.items_deleted) if result.ledger else 0,
            "hot_writes": sum(len(v) for v in result.ledger.hot_values.values())
            if result.ledger
            else 0,
        },
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return path

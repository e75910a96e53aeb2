"""The concurrency proof end to end: real gunicorn workers, Locust in its own processes (it
uses gevent, so it never runs inside pytest), and every reconciliation.

The first tests check the proof's own arithmetic on small inputs, so a failing run can be
trusted to mean the service, not the checker."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from loadtests import gates, reconcile
from tooling import metrics
from tooling.gunicorn import Gunicorn
from tooling.ledger import Ledger

PROJECT_ROOT = Path(__file__).resolve().parents[2]
API_ROUTES = {
    ("POST", "/users"), ("GET", "/users"), ("GET", "/users/{pubid}"), ("PUT", "/users/{pubid}"),
    ("DELETE", "/users/{pubid}"), ("POST", "/auth/token"), ("POST", "/auth/refresh"),
    ("POST", "/items"), ("GET", "/items"), ("GET", "/items/{pubid}"), ("PUT", "/items/{pubid}"),
    ("DELETE", "/items/{pubid}"),
}  # fmt: skip


# Tests assert correctness; latency is measured by the benchmarks. These gates only catch a
# service that stalls (seconds), not a noisy shared machine; the breached-gate test shows
# that gates fail the run.
STALL_GATES = ("--p95", "default=3000,signup=6000", "--p99", "default=6000,signup=10000")


def run_proof(reports: Path, *args: str, timeout: float = 150) -> tuple[int, str, dict[str, Any]]:
    completed = subprocess.run(
        [sys.executable, "-m", "loadtests.proof", "--reports-dir", str(reports), *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    output = completed.stdout + completed.stderr
    found = sorted(reports.glob("proof-*/summary.json"))
    summary: dict[str, Any] = json.loads(found[-1].read_text()) if found else {}
    return completed.returncode, output, summary


def checks_by_number(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"].split(" ", 1)[0]: check for check in summary["checks"]}


# -- the checker itself -------------------------------------------------------------------
def test_gate_specs_parse_and_reject_typos() -> None:
    assert gates.parse_spec("default=800, signup=3000") == {"default": 800.0, "signup": 3000.0}
    for bad in ("signups=1", "browse", "write=fast", "polling=-1"):
        with pytest.raises(gates.SpecError):
            gates.parse_spec(bad)


def test_breaches_name_each_gate() -> None:
    slow = {"requests": 10, "failures": 1, "p50_ms": 5, "p95_ms": 900, "p99_ms": 2000}
    figures = {
        "requests": 10,
        "failures": 1,
        "exceptions": 0,
        "rps": 4.0,
        "scenarios": {"write": slow},
    }
    limits = {
        "max_fail_ratio": 0,
        "p95_ms": {"default": 500},
        "p99_ms": {"write": 5000},
        "min_rps": 5,
    }
    found = gates.breaches(figures, limits)
    assert len(found) == 3, found
    assert any("failure ratio" in line for line in found)
    assert any("throughput" in line for line in found)
    assert any(line.startswith("write: p95 900") for line in found)


def test_route_reconciliation_counts_the_scrapes_and_flags_any_difference() -> None:
    locust = Counter({("GET", "/users"): 5, ("POST", "/users"): 2})
    server = Counter({("GET", "/users"): 5, ("POST", "/users"): 2, ("GET", "/metrics"): 3})
    check, _ = reconcile.routes(locust, server, scrapes=3)
    assert check.passed, check.detail
    server["POST", "/users"] += 1
    check, _ = reconcile.routes(locust, server, scrapes=3)
    assert not check.passed
    assert "POST /users: locust 2 != server 3" in check.detail


def test_ledger_row_arithmetic_covers_cascades() -> None:
    ledger = Ledger()
    for record in (
        {"e": "user+", "pubid": "a", "items": 2},
        {"e": "user+", "pubid": "b", "items": 0},
        {"e": "item+", "pubid": "i1", "owner": "b"},
        {"e": "item+", "pubid": "i2", "owner": "a"},
        {"e": "item-", "pubid": "i1", "owner": "b"},
        {"e": "user-", "pubid": "a", "items": 3},
    ):
        ledger.add(record)
    assert ledger.users_expected == {"b"}
    assert ledger.items_expected == set()
    assert ledger.items_gone == {"i1", "i2"}
    assert (ledger.user_rows_delta, ledger.item_rows_delta) == (1, 2 + 2 - 1 - 3)


def test_metrics_text_is_parsed_per_route_and_per_worker() -> None:
    text = (
        'http_requests_total{method="GET",route="/users/{pubid}",status="200"} 7.0\n'
        'http_requests_total{method="GET",route="/users/{pubid}",status="404"} 1.0\n'
        'worker_requests_total{worker="0"} 5.0\nworker_requests_total{worker="1"} 3.0\n'
        'db_pool_size{worker="0"} 10.0\ndb_pool_size{worker="1"} 10.0\n'
    )
    snapshot = metrics.parse(text)
    assert snapshot.by_route() == Counter({("GET", "/users/{pubid}"): 8})
    assert snapshot.worker_requests == {"0": 5.0, "1": 3.0}
    assert snapshot.live_slots == ["0", "1"]


def test_throttled_logins_reconcile_with_the_server_counter() -> None:
    ledger = Ledger()
    ledger.add({"e": "process", "requests": {}, "worker_pids": {}, "throttled_logins": 3})
    ledger.add({"e": "process", "requests": {}, "worker_pids": {}, "throttled_logins": 2})
    before = metrics.parse('auth_logins_throttled_total{limit="user_address"} 4.0\n')
    after = metrics.parse(
        'auth_logins_throttled_total{limit="user_address"} 8.0\n'
        'auth_logins_throttled_total{limit="address"} 1.0\n'
    )
    check = reconcile.throttled_logins(ledger, after, before)
    assert check.passed, check.detail
    ledger.throttled_logins += 1
    assert not reconcile.throttled_logins(ledger, after, before).passed


# -- the proof, for real ------------------------------------------------------------------
@pytest.mark.gunicorn
def test_proof_with_four_workers_reconciles_every_scenario(
    postgres_server_url: str, tmp_path: Path
) -> None:
    code, output, summary = run_proof(
        tmp_path, "--database-url", postgres_server_url, "--workers", "4",
        "--run-time", "20s", "--users", "24", "--spawn-rate", "12", "--bcrypt-rounds", "4",
        *STALL_GATES,
    )  # fmt: skip
    assert code == 0, output[-4000:]
    assert summary["passed"], output[-4000:]
    checks = checks_by_number(summary)
    for number in ("1.", "2.", "3a.", "3b.", "3c.", "3d.", "3e.", "3f.", "4a.", "4b.", "4c.",
                   "5.", "6."):  # fmt: skip
        assert checks[number]["passed"] is True, checks[number]
    # Not vacuous: every route was exercised, every worker served, every kind of write happened.
    assert {(row["method"], row["route"]) for row in summary["routes"]} >= API_ROUTES
    assert all(row["locust"] == row["server"] for row in summary["routes"])
    assert len(summary["workers"]) == 4
    assert all(row["requests"] > 0 for row in summary["workers"])
    assert all(count > 0 for count in summary["created"].values()), summary["created"]
    assert int(checks["4c."]["detail"].split()[1].rstrip(",")) > 0  # the abuse user was throttled
    assert set(summary["gates"]["figures"]["scenarios"]) == set(gates.SCENARIOS)
    run_dir = next(tmp_path.glob("proof-*"))
    for name in ("report.md", "locust.html", "locust_stats.csv", "requests_per_worker.png",
                 "pool.png"):  # fmt: skip
        assert (run_dir / name).stat().st_size > 0, name
    assert "RESULT: PASS" in output


@pytest.mark.gunicorn
def test_distributed_master_and_two_workers_reconcile_the_same_way(
    gunicorn_server: Gunicorn, database_url: str, tmp_path: Path
) -> None:
    code, output, summary = run_proof(
        tmp_path, "--url", gunicorn_server.url, "--database-url", database_url,
        "--distributed", "2", "--run-time", "12s", "--users", "16", "--spawn-rate", "16",
        *STALL_GATES,
    )  # fmt: skip
    assert code == 0, output[-4000:]
    checks = checks_by_number(summary)
    assert all(check["passed"] is not False for check in summary["checks"]), summary["checks"]
    assert checks["1."]["passed"] is True
    assert checks["3a."]["passed"] is True
    assert checks["3e."]["passed"] is True  # both worker processes contended on the same rows
    run_dir = next(tmp_path.glob("proof-*"))
    assert len(list((run_dir / "ledger").glob("ledger-*.jsonl"))) == 2
    assert "all 2 workers drained" in (run_dir / "locust.log").read_text()


@pytest.mark.gunicorn
def test_a_breached_gate_fails_the_proof_but_not_the_reconciliation(
    gunicorn_server: Gunicorn, database_url: str, tmp_path: Path
) -> None:
    code, output, summary = run_proof(
        tmp_path, "--url", gunicorn_server.url, "--database-url", database_url,
        "--run-time", "5s", "--users", "6", "--spawn-rate", "6", "--mix", "browse=1",
        "--min-rps", "1000000",
    )  # fmt: skip
    assert code == 1, output[-4000:]
    checks = checks_by_number(summary)
    assert checks["5."]["passed"] is False
    assert "throughput" in checks["5."]["detail"]
    assert checks["1."]["passed"] is True
    assert "RESULT: FAIL" in output

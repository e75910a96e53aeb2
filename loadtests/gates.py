"""Pass/fail gates for a headless run: failure ratio, p95/p99 per scenario, minimum throughput.

Pure code (no Locust import): the Locust side sums its statistics up in a figures dict
(requests, failures, exceptions, rps, and per scenario requests, failures, p50_ms, p95_ms,
p99_ms, max_ms), this module says which gates were breached; the proof checks its own options
with it."""

from __future__ import annotations

from typing import Any

SCENARIOS = ("browse", "write", "signup", "contention", "polling", "abuse")
# Sign-ups and the abuse scenario's logins each wait for a bcrypt slot (hash admission), so
# they get the longer limits.
DEFAULT_P95_MS = "default=1000,signup=3000,abuse=3000"
DEFAULT_P99_MS = "default=2500,signup=6000,abuse=6000"


class SpecError(ValueError):
    """A malformed `key=value,...` option; the message says which part."""


def parse_spec(text: str) -> dict[str, float]:
    """'default=1000,signup=3000' -> {'default': 1000.0, 'signup': 3000.0}."""
    keys = ("default", *SCENARIOS)
    result: dict[str, float] = {}
    for part in filter(None, (chunk.strip() for chunk in text.split(","))):
        key, sep, raw = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in keys:
            raise SpecError(f"{part!r}: expected KEY=NUMBER with KEY one of {', '.join(keys)}")
        try:
            result[key] = float(raw)
        except ValueError:
            raise SpecError(f"{part!r}: {raw.strip()!r} is not a number") from None
        if result[key] < 0:
            raise SpecError(f"{part!r}: must not be negative")
    return result


def limit(gates: dict[str, Any], gate: str, scenario: str) -> float | None:
    """A scenario's p95_ms or p99_ms limit: its own, else the default, else none."""
    spec = gates[gate]
    return spec.get(scenario, spec.get("default"))  # type: ignore[no-any-return]


def breaches(figures: dict[str, Any], gates: dict[str, Any]) -> list[str]:
    """Each breached gate, as one line a person can act on. Empty: every gate held. `gates`:
    max_fail_ratio, p95_ms and p99_ms (parsed specs), min_rps (0: none)."""
    requests, failures, rps = figures["requests"], figures["failures"], figures["rps"]
    ratio = failures / requests if requests else 0.0
    found = ["no requests were made"] if not requests else []
    if ratio > gates["max_fail_ratio"]:
        found.append(
            f"failure ratio {ratio:.4f} ({failures} of {requests}) > {gates['max_fail_ratio']:g}"
        )
    if figures["exceptions"]:
        found.append(f"{figures['exceptions']} exception(s) raised in scenario code")
    if gates["min_rps"] and rps < gates["min_rps"]:
        found.append(f"throughput {rps:.1f} req/s < minimum {gates['min_rps']:g}")
    for name, scenario in sorted(figures["scenarios"].items()):
        for gate in ("p95_ms", "p99_ms"):
            value, most = scenario[gate], limit(gates, gate, name)
            if most is not None and value > most:
                found.append(f"{name}: {gate[:3]} {value:.0f} ms > {most:g} ms")
    return found

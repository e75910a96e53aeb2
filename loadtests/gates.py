"""Pass/fail gates for a headless run: failure ratio, p95/p99 per scenario, minimum throughput.

Pure code (no Locust import): the Locust side turns its statistics into `RunFigures` and this
module says which gates were breached; the proof uses it to check its own options."""

from __future__ import annotations

from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class ScenarioFigures:
    requests: int
    failures: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class RunFigures:
    requests: int
    failures: int
    exceptions: int
    rps: float
    scenarios: dict[str, ScenarioFigures] = field(default_factory=dict)

    @property
    def fail_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Gates:
    max_fail_ratio: float = 0.0
    p95_ms: dict[str, float] = field(default_factory=lambda: parse_spec(DEFAULT_P95_MS))
    p99_ms: dict[str, float] = field(default_factory=lambda: parse_spec(DEFAULT_P99_MS))
    min_rps: float = 0.0


def breaches(figures: RunFigures, gates: Gates) -> list[str]:
    """Each breached gate, as one line a person can act on. Empty: every gate held."""
    found: list[str] = []
    if figures.requests == 0:
        found.append("no requests were made")
    if figures.fail_ratio > gates.max_fail_ratio:
        found.append(
            f"failure ratio {figures.fail_ratio:.4f} ({figures.failures} of {figures.requests})"
            f" > {gates.max_fail_ratio:g}"
        )
    if figures.exceptions:
        found.append(f"{figures.exceptions} exception(s) raised in scenario code")
    if gates.min_rps and figures.rps < gates.min_rps:
        found.append(f"throughput {figures.rps:.1f} req/s < minimum {gates.min_rps:g}")
    for name, scenario in sorted(figures.scenarios.items()):
        for label, value, spec in (
            ("p95", scenario.p95_ms, gates.p95_ms),
            ("p99", scenario.p99_ms, gates.p99_ms),
        ):
            limit = spec.get(name, spec.get("default"))
            if limit is not None and value > limit:
                found.append(f"{name}: {label} {value:.0f} ms > {limit:g} ms")
    return found

"""The one /metrics reader: prometheus_client's own text parser, into samples by name and
labels, or into the few series the load-test proof reconciles (`Snapshot`). The text
aggregates every gunicorn worker (multiprocess mode)."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

RouteKey = tuple[str, str]  # (method, route template)
Labels = frozenset[tuple[str, str]]
Samples = dict[str, dict[Labels, float]]  # sample name -> labels -> value


def read_samples(exposition: str) -> Samples:
    found: Samples = defaultdict(dict)
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            found[sample.name][frozenset(sample.labels.items())] = sample.value
    return found


def metric_sum(exposition: str | Samples, name: str, **labels: str) -> float:
    """Sum of a metric's samples (e.g. `auth_logins_throttled_total`) matching `labels`."""
    parsed = read_samples(exposition) if isinstance(exposition, str) else exposition
    wanted = labels.items()
    return sum(value for found, value in parsed.get(name, {}).items() if wanted <= found)


@dataclass(frozen=True)
class Snapshot:
    taken_at: float
    requests: dict[tuple[str, str, str], float] = field(default_factory=dict)
    worker_requests: dict[str, float] = field(default_factory=dict)
    in_progress: dict[str, float] = field(default_factory=dict)
    pool_checked_out: dict[str, float] = field(default_factory=dict)
    pool_size: dict[str, float] = field(default_factory=dict)
    db_errors: dict[str, float] = field(default_factory=dict)
    logins_throttled: float = 0.0  # auth_logins_throttled_total, every limit

    @property
    def live_slots(self) -> list[str]:
        """Workers alive now: each sets its slot's pool-size gauge (livesum) at start."""
        return sorted(self.pool_size, key=lambda slot: (len(slot), slot))

    @property
    def total_requests(self) -> float:
        return sum(self.requests.values())

    def by_route(self) -> Counter[RouteKey]:
        counts: Counter[RouteKey] = Counter()
        for (method, route, _status), value in self.requests.items():
            counts[method, route] += round(value)
        return counts

    def server_errors(self) -> float:
        return sum(value for (_m, _r, status), value in self.requests.items() if status[:1] == "5")


def parse(text: str) -> Snapshot:
    samples = read_samples(text)

    def summed(name: str, *keys: str) -> dict[Any, float]:
        """The samples of `name` summed by the values of the labels `keys`."""
        totals: dict[Any, float] = {}
        for labels, value in samples.get(name, {}).items():
            found = dict(labels)
            key = tuple(found[k] for k in keys) if len(keys) > 1 else found.get(keys[0], "?")
            totals[key] = totals.get(key, 0.0) + value
        return totals

    return Snapshot(
        taken_at=time.monotonic(),
        requests=summed("http_requests_total", "method", "route", "status"),
        db_errors=summed("db_errors_total", "kind"),
        logins_throttled=metric_sum(samples, "auth_logins_throttled_total"),
        worker_requests=summed("worker_requests_total", "worker"),
        in_progress=summed("http_requests_in_progress", "worker"),
        pool_checked_out=summed("db_pool_checked_out", "worker"),
        pool_size=summed("db_pool_size", "worker"),
    )


def scrape(http: httpx.Client) -> Snapshot:
    response = http.get("/metrics")
    response.raise_for_status()
    return parse(response.text)

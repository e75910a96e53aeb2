"""The one /metrics reader: prometheus_client's own text parser, into samples by name and
labels, or into the few series the load-test proof reconciles (`Snapshot`). The text
aggregates every gunicorn worker (multiprocess mode)."""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

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
    pool_overflow: dict[str, float] = field(default_factory=dict)
    worker_starts: dict[str, float] = field(default_factory=dict)
    worker_exits: dict[str, float] = field(default_factory=dict)
    db_errors: dict[str, float] = field(default_factory=dict)
    logins_throttled: float = 0.0  # auth_logins_throttled_total, every limit

    @property
    def live_slots(self) -> list[str]:
        """Workers alive now: each sets its slot's pool-size gauge (livesum) at start."""
        return sorted(self.pool_size, key=_slot_order)

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


def _slot_order(slot: str) -> tuple[int, str]:
    return (int(slot), slot) if slot.isdigit() else (10**9, slot)


_SERIES = {
    "worker_requests_total": "worker_requests",
    "http_requests_in_progress": "in_progress",
    "db_pool_checked_out": "pool_checked_out",
    "db_pool_size": "pool_size",
    "db_pool_overflow": "pool_overflow",
    "worker_starts_total": "worker_starts",
    "worker_exits_total": "worker_exits",
}


def parse(text: str, *, taken_at: float | None = None) -> Snapshot:
    requests: dict[tuple[str, str, str], float] = {}
    by_worker: dict[str, dict[str, float]] = {name: {} for name in _SERIES.values()}
    db_errors: dict[str, float] = {}
    throttled = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if sample.name == "http_requests_total":
                key = (labels["method"], labels["route"], labels["status"])
                requests[key] = requests.get(key, 0.0) + sample.value
            elif sample.name in _SERIES:
                target = by_worker[_SERIES[sample.name]]
                slot = labels.get("worker", "?")
                target[slot] = target.get(slot, 0.0) + sample.value
            elif sample.name == "db_errors_total":
                db_errors[labels["kind"]] = db_errors.get(labels["kind"], 0.0) + sample.value
            elif sample.name == "auth_logins_throttled_total":
                throttled += sample.value
    return Snapshot(
        taken_at=time.monotonic() if taken_at is None else taken_at,
        requests=requests,
        db_errors=db_errors,
        logins_throttled=throttled,
        worker_requests=by_worker["worker_requests"],
        in_progress=by_worker["in_progress"],
        pool_checked_out=by_worker["pool_checked_out"],
        pool_size=by_worker["pool_size"],
        pool_overflow=by_worker["pool_overflow"],
        worker_starts=by_worker["worker_starts"],
        worker_exits=by_worker["worker_exits"],
    )


def scrape(http: httpx.Client) -> Snapshot:
    response = http.get("/metrics")
    response.raise_for_status()
    return parse(response.text)


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: after.get(key, 0.0) - before.get(key, 0.0) for key in after.keys() | before}

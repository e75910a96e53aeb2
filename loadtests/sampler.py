"""Samples /metrics while the load runs (a thread; every scrape is itself a request the server
counts), prints a progress line every few seconds, and draws what Locust's own HTML report
cannot show: requests per gunicorn worker and each worker's database pool over time
(matplotlib, rendered to PNG without a display)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from loadtests.reconcile import WorkerRow
from tooling.metrics import Snapshot, delta, scrape


@dataclass
class Sampler:
    """A /metrics scrape a second while in its with-block, a progress line every five."""

    url: str
    baseline: Snapshot
    say: Callable[[str], None]
    samples: list[Snapshot] = field(default_factory=list)
    scrapes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, name="metrics-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        failed = 0
        with httpx.Client(base_url=self.url, timeout=10) as http:
            while not self._stop.wait(1.0):
                self.scrapes += 1
                try:
                    self.samples.append(scrape(http))
                except httpx.HTTPError as exc:
                    failed += 1
                    if failed in {1, 10, 100}:
                        self.say(f"metrics scrape failed ({failed}x): {exc!r}")
                    continue
                if len(self.samples) % 5 == 0:
                    self.say(self._progress(self.samples[-1], self.baseline))

    @staticmethod
    def _progress(now: Snapshot, base: Snapshot) -> str:
        per_worker = delta(now.worker_requests, base.worker_requests)
        workers = " ".join(f"{slot}:{value:.0f}" for slot, value in sorted(per_worker.items()))
        return (
            f"{now.taken_at - base.taken_at:5.0f}s  "
            f"{now.total_requests - base.total_requests:7.0f} requests  "
            f"in flight {sum(now.in_progress.values()):3.0f}  "
            f"pool {sum(now.pool_checked_out.values()):3.0f}/{sum(now.pool_size.values()):.0f}  "
            f"5xx {now.server_errors() - base.server_errors():.0f}  per worker {workers}"
        )

    def draw(self, rows: list[WorkerRow], out: Path) -> list[str]:
        """requests_per_worker.png and pool.png in `out`; returns their names."""
        samples, base = self.samples, self.baseline
        seconds = [s.taken_at - base.taken_at for s in samples]
        figure, (bars, lines) = plt.subplots(1, 2, figsize=(11, 4))
        bars.bar([row.slot for row in rows], [row.requests for row in rows], color="tab:blue")
        for index, row in enumerate(rows):
            bars.annotate(f"{row.share:.1%}", (index, row.requests), ha="center", va="bottom")
        bars.set(title="Requests per worker (whole run)", xlabel="worker slot", ylabel="requests")
        served = [delta(s.worker_requests, base.worker_requests) for s in samples]
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

"""Samples /metrics while the load runs (for the plots) and prints one progress line per
few seconds. Runs in a thread; every scrape is itself a request the server counts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from tooling.metrics import Snapshot, scrape


@dataclass(frozen=True)
class Sample:
    seconds: float
    requests: float
    per_worker: dict[str, float]
    in_progress: float
    checked_out: dict[str, float]
    pool_size: float
    server_errors: float


@dataclass
class Sampler:
    url: str
    baseline: Snapshot
    interval: float = 1.0
    progress_every: float = 5.0
    say: Callable[[str], None] = print
    samples: list[Sample] = field(default_factory=list)
    scrapes: int = 0
    failed_scrapes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="metrics-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        started = time.monotonic()
        last_progress = started
        with httpx.Client(base_url=self.url, timeout=10) as http:
            while not self._stop.wait(self.interval):
                self.scrapes += 1
                try:
                    snapshot = scrape(http)
                except httpx.HTTPError as exc:
                    self.failed_scrapes += 1
                    if self.failed_scrapes in {1, 10, 100}:
                        self.say(f"metrics scrape failed ({self.failed_scrapes}x): {exc!r}")
                    continue
                sample = self._sample(snapshot, snapshot.taken_at - started)
                self.samples.append(sample)
                if snapshot.taken_at - last_progress >= self.progress_every:
                    last_progress = snapshot.taken_at
                    self.say(self._progress(sample))

    def _sample(self, snapshot: Snapshot, seconds: float) -> Sample:
        base = self.baseline
        return Sample(
            seconds=seconds,
            requests=snapshot.total_requests - base.total_requests,
            per_worker={
                slot: value - base.worker_requests.get(slot, 0.0)
                for slot, value in snapshot.worker_requests.items()
            },
            in_progress=sum(snapshot.in_progress.values()),
            checked_out=dict(snapshot.pool_checked_out),
            pool_size=sum(snapshot.pool_size.values()),
            server_errors=snapshot.server_errors() - base.server_errors(),
        )

    def _progress(self, sample: Sample) -> str:
        previous = self.samples[-6] if len(self.samples) > 5 else None
        rate = (
            (sample.requests - previous.requests) / (sample.seconds - previous.seconds)
            if previous is not None and sample.seconds > previous.seconds
            else sample.requests / max(sample.seconds, 1e-9)
        )
        workers = " ".join(
            f"{slot}:{value:.0f}" for slot, value in sorted(sample.per_worker.items())
        )
        return (
            f"{sample.seconds:5.0f}s  {sample.requests:7.0f} requests ({rate:6.0f}/s)  "
            f"in flight {sample.in_progress:3.0f}  pool {sum(sample.checked_out.values()):3.0f}"
            f"/{sample.pool_size:.0f}  5xx {sample.server_errors:.0f}  per worker {workers}"
        )

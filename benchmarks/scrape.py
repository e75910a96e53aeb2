"""A Prometheus-like scraper: GET /metrics on a fresh connection at a fixed interval, in a
background thread, recording each scrape's latency."""

from __future__ import annotations

import http.client
import threading
import time

from benchmarks.servers import http_get


class Scraper(threading.Thread):
    def __init__(self, port: int, *, interval_s: float = 0.2, timeout_s: float = 5.0) -> None:
        super().__init__(name="metrics-scraper", daemon=True)
        self.port = port
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.latencies_ms: list[float] = []
        self.failures = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            started = time.perf_counter()
            try:
                status, body = http_get(self.port, "/metrics", timeout=self.timeout_s)
            except (OSError, http.client.HTTPException):
                self.failures += 1
            else:
                if status == 200 and body:
                    self.latencies_ms.append(1000 * (time.perf_counter() - started))
                else:
                    self.failures += 1
            self._stop_event.wait(self.interval_s)

    def finish(self) -> None:
        self._stop_event.set()
        self.join(timeout=self.timeout_s + 1)

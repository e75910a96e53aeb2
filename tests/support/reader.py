"""A reader in its own process: GET one path back to back on one keep-alive connection and
print the latencies (ms) as JSON. Its own process, so a load generator in the test's
process cannot delay it and pass that off as the server's latency.

    python -m tests.support.reader URL SECONDS
"""

from __future__ import annotations

import json
import sys
import time

import httpx


def read(url: str, seconds: float) -> dict[str, object]:
    latencies: list[float] = []
    failures: list[str] = []
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=5) as http:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            try:
                response = http.get(url)
            except httpx.HTTPError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                failures.append(f"{response.status_code}: {response.text[:200]}")
    return {"latencies_ms": latencies, "failures": failures}


if __name__ == "__main__":
    print(json.dumps(read(sys.argv[1], float(sys.argv[2]))))

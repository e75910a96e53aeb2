"""The proof's plots of what Locust's own HTML report cannot show: requests per gunicorn
worker and each worker's database pool (matplotlib, rendered to PNG without a display)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from loadtests.reconcile import WorkerRow
from loadtests.sampler import Sample


def requests_per_worker(rows: list[WorkerRow], samples: list[Sample], path: Path) -> None:
    figure, (bars, lines) = plt.subplots(1, 2, figsize=(11, 4))
    slots = [row.slot for row in rows]
    bars.bar(slots, [row.requests for row in rows], color="tab:blue")
    for index, row in enumerate(rows):
        bars.annotate(f"{row.share:.1%}", (index, row.requests), ha="center", va="bottom")
    bars.set(title="Requests per worker (whole run)", xlabel="worker slot", ylabel="requests")
    for slot in slots:
        lines.plot(
            [s.seconds for s in samples], [s.per_worker.get(slot, 0) for s in samples], label=slot
        )
    lines.set(title="Requests per worker over time", xlabel="seconds", ylabel="cumulative")
    lines.legend(title="worker")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def pool_usage(samples: list[Sample], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(11, 4))
    seconds = [s.seconds for s in samples]
    slots = sorted({slot for s in samples for slot in s.checked_out})
    for slot in slots:
        axis.plot(seconds, [s.checked_out.get(slot, 0) for s in samples], label=f"worker {slot}")
    axis.plot(
        seconds,
        [s.in_progress for s in samples],
        "k:",
        label="requests in progress (all, incl. the scrape)",
    )
    if samples:
        axis.axhline(samples[-1].pool_size / max(len(slots), 1), color="grey", ls="--",
                     label="pool size per worker")  # fmt: skip
    axis.set(title="Database pool: connections checked out", xlabel="seconds", ylabel="count")
    axis.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)

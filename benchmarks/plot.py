"""results.png: req/s (bars, with the range over rounds) and p99 (bars) per workload; and
scaling.png: config 1's reads against connections and workers (the rows of RESULTS.md)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.report import CURVES, Key, by_key, curve

_WORKLOADS = ("read", "user", "insert", "list", "signup", "steady", "scrape", "flood")
_P99_LIMITS = {"read": 50.0, "user": 50.0, "insert": 60.0}
_TICKS = {
    "read": "read\nGET /items/{id}",
    "user": "unauthenticated read\nGET /users/{id}",
    "insert": "insert\nPOST /items",
    "list": "list\nGET /users?limit=50",
    "signup": "reads during\nsign-up storm",
    "flood": "reads during\nsign-up flood",
    "steady": "reads from cold\nstart (steady run)",
    "scrape": "reads while /metrics\nis scraped (4 workers)",
}


def render(document: dict[str, Any], path: Path) -> None:
    found = by_key(document["summaries"])
    configs = [c for c in document["configs"] if any(k[0] == c for k in found)]
    workloads = [w for w in _WORKLOADS if any(k[1] == w for k in found)]
    rounds: dict[Key, list[float]] = defaultdict(list)
    for s in document["samples"]:
        rounds[s["config"], s["workload"]].append(s["rps"])
    # Bars of one workload sit side by side, centred on it, only for configs that ran it.
    present = {w: [c for c in configs if (c, w) in found] for w in workloads}
    width = 0.84 / max([1, *(len(cs) for cs in present.values())])
    positions = {
        (config, workload): w_index + (index - (len(present[workload]) - 1) / 2) * width
        for w_index, workload in enumerate(workloads)
        for index, config in enumerate(present[workload])
    }
    colors = plt.get_cmap("tab10")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(14, 10), constrained_layout=True)
    for index, config in enumerate(configs):
        keys = [(config, w) for w in workloads if (config, w) in found]
        rps, p99 = [found[k]["rps"] for k in keys], [found[k]["p99_ms"] for k in keys]
        spread = [[r - min(rounds[k]) for r, k in zip(rps, keys, strict=True)]]
        spread.append([max(rounds[k]) - r for r, k in zip(rps, keys, strict=True)])
        xs, color = [positions[k] for k in keys], colors(index % 10)
        bars = top.bar(xs, rps, width, yerr=spread, capsize=2, color=color, label=config)
        top.bar_label(bars, labels=[f"{v:.0f}" for v in rps], fontsize=7, rotation=90, padding=3)
        bars = bottom.bar(xs, p99, width, color=color, label=config)
        bottom.bar_label(bars, labels=[f"{v:.0f}" for v in p99], fontsize=7, rotation=90, padding=3)
    for (config, workload), summary in found.items():
        scrape = summary["extra"].get("scrape_p99_ms")
        if scrape is not None and (config, workload) in positions:
            x = positions[(config, workload)] + width
            bottom.scatter([x], [scrape], marker="D", color="black", zorder=3)
            bottom.annotate(
                f"/metrics p99\n{scrape:.0f} ms",
                (x, scrape),
                fontsize=7,
                xytext=(6, -4),
                textcoords="offset points",
            )
    for w_index, workload in enumerate(workloads):
        limit = _P99_LIMITS.get(workload)
        if limit is not None:
            bottom.hlines(limit, w_index - 0.45, w_index + 0.45, colors="red", linestyles="dashed")
    run = document["run"]
    top.set_title(
        f"Throughput, median of {run['rounds']} rounds (whiskers: min-max), "
        f"wrk -c{run['connections']}, {run['duration_s']:.0f} s runs - "
        f"{document['machine']['cores']} cores, {run['started'][:10]}"
    )
    top.set_ylabel("requests per second (log scale)")
    top.set_yscale("log")
    bottom.set_title("p99 latency, median of rounds (red dashes: target)")
    bottom.set_ylabel("p99 latency, ms (log scale)")
    bottom.set_yscale("log")
    for axis in (top, bottom):
        axis.set_xticks(range(len(workloads)), [_TICKS.get(w, w) for w in workloads])
        axis.grid(axis="y", alpha=0.3)
        axis.margins(y=0.15)
    top.legend(fontsize=8, ncols=5, loc="upper right")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def render_scaling(document: dict[str, Any], path: Path) -> None:
    """scaling.png, unless the run measured neither curve."""
    curves = [(against, curve(document, against)) for against in CURVES]
    if not any(rows for _, rows in curves):
        return
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    cores = document["machine"]["cores"]
    labels = {
        "connections": "wrk connections (config 1, 2 workers)",
        "workers": f"gunicorn workers, 50 connections, {cores} cores",
    }
    for axis, (against, rows) in zip(axes, curves, strict=True):
        if not rows:
            continue
        xs = [r[against] for r in rows]
        axis.plot(xs, [r["rps"] for r in rows], "o-", label="req/s")
        if against == "connections":
            axis.set_xscale("log")
            latency = axis.twinx()
            latency.plot(xs, [r["p99_ms"] for r in rows], "s--", color="tab:red")
            latency.set_ylabel("p99 ms (red, log scale)", color="tab:red")
            latency.set_yscale("log")
        axis.set_xticks(xs, [str(x) for x in xs])
        axis.set_xlabel(labels[against])
        axis.set_ylabel("requests per second")
        axis.set_ylim(bottom=0)
        axis.set_title(f"One-row authenticated reads against {against}")
        axis.grid(alpha=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)

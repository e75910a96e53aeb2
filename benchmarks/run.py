"""Entry point of the benchmark harness: `python -m benchmarks.run --help`."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import soak
from benchmarks.cli import parse_args
from benchmarks.common import say
from benchmarks.database import BenchDatabase
from benchmarks.document import analyse, build_document, publish
from benchmarks.harness import Harness
from benchmarks.machine import describe
from benchmarks.wrk import WrkError, wrk_binary, wrk_version
from service.core.settings import Settings


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report_only:
        document = json.loads((args.out / "results.json").read_text())
        document["run"].setdefault("pool_total", 2 * Settings().connections_per_worker)
        publish(analyse(document), args.out)
        return 0
    try:
        wrk = wrk_version()
    except WrkError as exc:
        say(str(exc))
        return 2
    wrk_binary()
    started = datetime.now(UTC)
    work_dir = Path(tempfile.mkdtemp(prefix="bench-run-"))
    database = BenchDatabase.provide()
    try:
        database.migrate()
        machine = describe(wrk_version=wrk, postgres_version=database.server_version)
        harness = Harness(args, database, work_dir)
        harness.seed()
        if args.soak:
            command = "python -m benchmarks.run " + shlex.join(
                sys.argv[1:] if argv is None else argv
            )
            result = soak.soak(harness, args.soak)
            args.out.mkdir(parents=True, exist_ok=True)
            soak.write(result, args.out, command.strip())
            shutil.rmtree(work_dir, ignore_errors=True)
            return 0 if all(v["met"] for v in result["verdicts"]) else 1
        run_started = time.monotonic()
        harness.run()
        say(f"all rounds done in {(time.monotonic() - run_started) / 60:.1f} min")
    finally:
        database.close()
    document = build_document(harness, started, machine)
    publish(document, args.out)
    if args.keep_logs or harness.failures:
        say(f"server logs kept in {work_dir}")
    else:
        shutil.rmtree(work_dir, ignore_errors=True)
    expected = {(config.key, w) for config in harness.configs for w in config.workloads} & {
        (config.key, w) for config in harness.configs for w in args.workloads
    }
    measured = {(s["config"], s["workload"]) for s in document["summaries"]}
    return 0 if expected <= measured else 1


if __name__ == "__main__":
    sys.exit(main())

"""Serve the aggregate of every worker's metrics on a port of its own.

Started by the gunicorn master (METRICS_BIND=host:port) as a separate process, so scrapes
still answer when every worker is busy, and /metrics can stay off the public port. A
process rather than a thread in the master: threads and fork() do not mix."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from types import FrameType

from prometheus_client import start_http_server

from service.core.metrics_files import aggregate_registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bind", required=True, help="host:port")
    parser.add_argument("--directory", default=os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
    args = parser.parse_args(argv)
    if not args.directory:
        parser.error("PROMETHEUS_MULTIPROC_DIR or --directory is required")
    host, _, port = args.bind.rpartition(":")
    server, thread = start_http_server(
        int(port), addr=host or "0.0.0.0", registry=aggregate_registry(args.directory)
    )

    def stop(_signum: int, _frame: FrameType | None) -> None:
        server.shutdown()

    def exit_with_master() -> None:
        # Even a SIGKILLed master must not leave this process serving stale numbers.
        master = os.getppid()
        while thread.is_alive():
            if os.getppid() != master:
                server.shutdown()
                return
            time.sleep(1)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=exit_with_master, daemon=True).start()
    thread.join()
    return 0


if __name__ == "__main__":
    sys.exit(main())

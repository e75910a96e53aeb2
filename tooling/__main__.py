"""Developer entry point behind ./dev: provide a database, migrate, run a command.

    python -m tooling serve            # database + migrations + gunicorn -c gunicorn.conf.py
    python -m tooling run -- CMD ...   # database + migrations, then CMD with DATABASE_URL set
    python -m tooling migrate          # database + alembic upgrade head
    python -m tooling stop-db          # stop the embedded PostgreSQL

With DATABASE_URL set, that database is used as is. Without it, an embedded PostgreSQL is
started in .pgdata/dev (kept between runs) and stopped again when the last command using it
ends.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from types import FrameType

from tooling.database import migrate
from tooling.postgres import DEV_DATA_DIR, PROJECT_ROOT, EmbeddedPostgres, provided_database


def say(message: str) -> None:
    print(f"[dev] {message}", file=sys.stderr, flush=True)


def run_child(command: list[str], url: str) -> int:
    """Run `command` with DATABASE_URL set, forwarding SIGINT/SIGTERM/SIGHUP to it."""
    child = subprocess.Popen(command, cwd=PROJECT_ROOT, env={**os.environ, "DATABASE_URL": url})

    def forward(signum: int, _frame: FrameType | None) -> None:
        child.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    return child.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tooling",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["serve", "run", "migrate", "stop-db"])
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="run's command")
    args = parser.parse_args(argv)
    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if bool(command) != (args.command == "run"):
        parser.error("run takes a command (e.g. run -- pytest), the others none")

    if args.command == "stop-db":
        EmbeddedPostgres(DEV_DATA_DIR, log=say).stop()
        return 0
    with provided_database(None, say) as url:
        say("applying migrations (alembic upgrade head) ...")
        migrate(url)
        if args.command == "migrate":
            return 0
        if args.command == "serve":
            command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"]
        say("running: " + " ".join(command))
        return run_child(command, url)


if __name__ == "__main__":
    sys.exit(main())

"""Paths and the progress printer shared by the harness modules."""

from __future__ import annotations

import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
LUA_DIR = BENCH_DIR / "lua"

_STARTED = time.monotonic()


def say(message: str) -> None:
    """One progress line on stderr, stamped with the time since the harness started."""
    elapsed = time.monotonic() - _STARTED
    minutes, seconds = divmod(int(elapsed), 60)
    print(f"[bench {minutes:02d}:{seconds:02d}] {message}", file=sys.stderr, flush=True)

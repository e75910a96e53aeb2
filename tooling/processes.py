"""Process introspection for the dev tooling, tests and benchmarks (Linux /proc)."""

from __future__ import annotations

import os
from pathlib import Path


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state is [0], ppid [1])."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces; the fields after its closing paren do not.
    return stat[stat.rindex(")") + 2 :].split()


def cmdline(pid: int) -> bytes:
    """The process's command line, NUL-separated (empty once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def rss_mb(pid: int) -> float | None:
    """Resident memory in MiB, None once the process is gone."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])  # resident
    except OSError:
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def children_with_state(pid: int) -> dict[int, str]:
    """Every child process of `pid` (zombies too) and its state letter (R, S, D, Z, ...)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        if fields is not None and int(fields[1]) == pid:
            found[int(entry.name)] = fields[0]
    return dict(sorted(found.items()))


def children_of(pid: int) -> list[int]:
    """Live (non-zombie) child processes of `pid`, sorted."""
    return [child for child, state in children_with_state(pid).items() if state not in "ZX"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time `pid` has used so far (0 if it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # utime and stime are fields 14 and 15 of /proc/PID/stat, counted from 1 with the name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

"""Process introspection for the dev tooling, tests and benchmarks (Linux /proc)."""

from __future__ import annotations

from pathlib import Path


def children_of(pid: int) -> list[int]:
    """Live (non-zombie) child processes of `pid`, sorted."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces; the fields after its closing paren do not.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)

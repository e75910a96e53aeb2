"""The multiprocess metrics directory: consistent reads, and compaction of dead workers.

prometheus-client keeps a counter and a histogram file per process forever, so counters
never go backwards, and the directory grows by a few files per recycled worker. When a
worker dies, the master folds its values into per-type archive files and deletes its files.
A directory lock (shared for scrapes, exclusive for compaction) makes each scrape see every
value exactly once: before the fold or after it, never in between.
"""

from __future__ import annotations

import fcntl
import glob
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict

ARCHIVE_PID = "archive"
_LOCK_FILE = ".compaction.lock"
# (file prefix, how two processes' values combine). Live gauges are dropped, not folded.
_FOLDED: tuple[tuple[str, Callable[[float, float], float]], ...] = (
    ("counter", lambda archived, dead: archived + dead),
    ("histogram", lambda archived, dead: archived + dead),
    ("gauge_max", max),
)


@contextmanager
def directory_lock(directory: str, *, exclusive: bool) -> Iterator[None]:
    with open(os.path.join(directory, _LOCK_FILE), "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class ConsistentMultiProcessCollector(multiprocess.MultiProcessCollector):
    def collect(self) -> Iterable[Metric]:
        with directory_lock(self._path, exclusive=False):
            # A worker that is just starting creates its file empty and sizes it a moment
            # later; prometheus-client cannot parse a 0-byte file, and it holds no values yet.
            files = [
                path
                for path in glob.glob(os.path.join(self._path, "*.db"))
                if os.path.getsize(path) > 0
            ]
            return list(self.merge(files, accumulate=True))


def aggregate_registry(directory: str) -> CollectorRegistry:
    registry = CollectorRegistry()
    ConsistentMultiProcessCollector(registry, path=directory)
    return registry


# A file's first 8 bytes say how much of it is used; prometheus-client creates the file
# empty and sizes it a moment later, so a worker killed in between leaves a shorter one.
_HEADER_BYTES = 8


def compact_dead_process(directory: str, pid: int) -> None:
    """Called by the master for each exited worker."""
    with directory_lock(directory, exclusive=True):
        multiprocess.mark_process_dead(pid, directory)
        for prefix, combine in _FOLDED:
            dead = Path(directory) / f"{prefix}_{pid}.db"
            try:
                size = dead.stat().st_size
            except FileNotFoundError:
                continue
            if size < _HEADER_BYTES:  # created but never written: it holds no values
                dead.unlink()
                continue
            archive = MmapedDict(str(Path(directory) / f"{prefix}_{ARCHIVE_PID}.db"))
            try:
                for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(str(dead)):
                    archived, _ = archive.read_value(key)
                    archive.write_value(key, combine(archived, value), timestamp)
            finally:
                archive.close()
            dead.unlink()

"""The master's compaction of a dead worker's metrics files (runs in gunicorn's child_exit:
an exception there stops the master)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.mmap_dict import MmapedDict

from service.core.metrics_files import compact_dead_process

KEY = '["requests_total", "requests_total", {}, "help"]'


def _write(path: Path, value: float) -> None:
    values = MmapedDict(str(path))
    values.write_value(KEY, value, 0.0)
    values.close()


def _read(path: Path) -> dict[str, float]:
    return {key: value for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path))}


def test_a_dead_workers_counters_fold_into_the_archive(tmp_path: Path) -> None:
    _write(tmp_path / "counter_archive.db", 5)
    _write(tmp_path / "counter_101.db", 3)
    compact_dead_process(str(tmp_path), 101)
    assert _read(tmp_path / "counter_archive.db") == {KEY: 8}
    assert not (tmp_path / "counter_101.db").exists()


def test_a_worker_killed_before_its_file_was_sized_leaves_nothing_to_fold(
    tmp_path: Path,
) -> None:
    """prometheus-client creates each file empty and sizes it a moment later: a SIGKILL in
    between leaves a 0-byte file, which once made the master's main loop crash."""
    _write(tmp_path / "counter_archive.db", 5)
    (tmp_path / "counter_102.db").write_bytes(b"")
    (tmp_path / "histogram_102.db").write_bytes(b"")
    compact_dead_process(str(tmp_path), 102)
    assert _read(tmp_path / "counter_archive.db") == {KEY: 5}
    assert sorted(path.name for path in tmp_path.glob("*.db")) == ["counter_archive.db"]

"""`./dev sync` on the kinds of .venv users have: none yet, one made by uv (no pip in it),
and one made by `python3 -m venv`. Runs the real script against the real lock (uv's cache
makes the installs quick); only the service's sources are copied, not the tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT_FILES = ("dev", "pyproject.toml", "uv.lock", "README.md")


@pytest.fixture(scope="module")
def project_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("project")
    for name in PROJECT_FILES:
        shutil.copy2(PROJECT_ROOT / name, copy / name)
    shutil.copytree(PROJECT_ROOT / "service", copy / "service")
    return copy


def dev_sync(project: Path) -> None:
    result = subprocess.run(
        ["bash", "dev", "sync"],
        check=False,
        cwd=project,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"./dev sync failed:\n{result.stdout}\n{result.stderr}"


def assert_installed(project: Path) -> None:
    probe = "import fastapi, sqlalchemy, service; print('ok')"
    result = subprocess.run(
        [str(project / ".venv/bin/python"), "-c", probe],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.stdout.strip() == "ok", result.stderr


def test_sync_creates_the_venv(project_copy: Path) -> None:
    shutil.rmtree(project_copy / ".venv", ignore_errors=True)
    dev_sync(project_copy)
    assert_installed(project_copy)


def test_sync_works_on_a_venv_made_by_uv(project_copy: Path) -> None:
    dev_sync(project_copy)  # brings .uv/bin/uv
    shutil.rmtree(project_copy / ".venv")
    subprocess.run(
        [str(project_copy / ".uv/bin/uv"), "venv", "--quiet", ".venv"], cwd=project_copy, check=True
    )
    assert not (project_copy / ".venv/bin/pip").exists()
    dev_sync(project_copy)
    assert_installed(project_copy)


def test_sync_works_on_a_venv_made_by_python(project_copy: Path) -> None:
    shutil.rmtree(project_copy / ".venv", ignore_errors=True)
    subprocess.run(["python3", "-m", "venv", ".venv"], cwd=project_copy, check=True)
    dev_sync(project_copy)
    assert_installed(project_copy)

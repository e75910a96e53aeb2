from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]

# Records PROMETHEUS_MULTIPROC_DIR at the moment prometheus_client is first imported, then
# loads gunicorn.conf.py the way gunicorn does and imports the app the way a worker does.
PROBE = """
import importlib.abc, os, runpy, sys

seen = []

class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "prometheus_client" and not seen:
            seen.append(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        return None

sys.meta_path.insert(0, Watch())
runpy.run_path("gunicorn.conf.py")
import service.app
print("dir at first import:", seen[0])
"""


def test_prometheus_client_is_first_imported_after_the_metrics_dir_is_set() -> None:
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgresql+asyncpg://u@127.0.0.1/db"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("dir at first import: /"), result.stdout + result.stderr


FD_PROBE = """
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
from service.core.deployment import raise_fd_limit
expected = 1000 if hard == resource.RLIM_INFINITY else min(1000, hard)
print(raise_fd_limit(1000) == expected == resource.getrlimit(resource.RLIMIT_NOFILE)[0])
print(raise_fd_limit(100) == 100 and resource.getrlimit(resource.RLIMIT_NOFILE)[0] == expected)
"""


def test_the_master_raises_the_descriptor_limit_its_workers_inherit() -> None:
    result = subprocess.run(
        [sys.executable, "-c", FD_PROBE],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == ["True", "True"], result.stdout

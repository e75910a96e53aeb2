"""Debian tools that some tests need: installed when missing, or the test fails loudly."""

from __future__ import annotations

import os
import shutil
import subprocess


def require_binary(binary: str, package: str) -> str:
    """Path to `binary`, installing Debian's `package` first when it is missing.

    Never skips: a missing tool that cannot be installed is a failure with the reason."""
    found = shutil.which(binary)
    if found:
        return found
    if os.geteuid() != 0:
        raise RuntimeError(f"{binary} is missing; install it with: apt-get install {package}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
    ):
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
    found = shutil.which(binary)
    if not found:
        raise RuntimeError(f"installed {package} but {binary} is still not on PATH")
    return found

"""The Dockerfile read as data, and the image "built" by replaying it without Docker.

`replay_image` runs the Dockerfile's own instructions (the same uv commands, the same
files, the same paths) in a scratch root; what .dockerignore lets into the build context
follows Docker's matching rules.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.system import require_binary

PROJECT_ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Stage:
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]


def parse_dockerfile(path: Path) -> list[Stage]:
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = [Stage("(global)")]
    for line in logical:
        keyword, _, args = line.strip().partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            stages.append(Stage(parts[2] if len(parts) == 3 else str(len(stages))))
        stages[-1].instructions.append((keyword, " ".join(args.split())))
    return stages


def dockerfile_stages() -> dict[str, Stage]:
    return {stage.name: stage for stage in parse_dockerfile(PROJECT_ROOT / "Dockerfile")}


def arg_defaults(*stages: Stage) -> dict[str, str]:
    found = {}
    for stage in stages:
        for args in stage.all("ARG"):
            name, _, default = args.partition("=")
            found[name] = default
    return found


def env_pairs(args: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in shlex.split(args))


def copy_parts(args: str) -> tuple[dict[str, str], list[str], str]:
    """`--chmod=0755 a b dest` -> ({"chmod": "0755"}, ["a", "b"], "dest")."""
    words = args.split()
    flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
    *sources, destination = [w for w in words if not w.startswith("--")]
    return flags, sources, destination


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list)
    assert all(isinstance(part, str) for part in value)
    return value


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    index = 0
    while index < len(pattern):
        if pattern.startswith("**", index):
            out += ".*"
            index += 2
        elif pattern[index] == "*":
            out += "[^/]*"
            index += 1
        elif pattern[index] == "?":
            out += "[^/]"
            index += 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            out += pattern[index : end + 1]
            index = end + 1
        else:
            out += re.escape(pattern[index])
            index += 1
    return re.compile(out + "$")


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in (PROJECT_ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        rules.append((negated, _pattern_regex(pattern)))
    return rules


def is_ignored(relative: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negated, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


def build_context() -> list[str]:
    """Relative paths of the files `docker build .` would send."""
    rules = dockerignore_rules()
    keep = []
    for directory, dirs, files in os.walk(PROJECT_ROOT):
        relative_dir = os.path.relpath(directory, PROJECT_ROOT)
        dirs[:] = [d for d in dirs if d not in {".git", ".venv", ".pgdata", "node_modules"}]
        for name in files:
            relative = os.path.normpath(os.path.join(relative_dir, name))
            if not is_ignored(relative, rules):
                keep.append(relative)
    return sorted(keep)


@dataclass
class ScratchImage:
    """A directory standing in for the image's filesystem, and the Dockerfile's metadata."""

    root: Path
    env: dict[str, str]
    workdir: Path
    uid: int
    entrypoint: list[str]
    cmd: list[str]
    healthcheck: list[str]


def _rooted(root: Path, value: str) -> str:
    if ":" in value and value.startswith("/"):  # a PATH-like list
        return ":".join(_rooted(root, part) for part in value.split(":"))
    return str(root / value.lstrip("/")) if value.startswith("/") else value


def _copy(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def _replay_stage(stage: Stage, root: Path, context: Path, env: dict[str, str]) -> Path:
    """Apply WORKDIR/ENV/COPY/RUN of one stage under `root`; returns the WORKDIR."""
    uv = Path(sys.executable).parent / "uv"
    workdir = root
    for keyword, args in stage.instructions:
        if keyword == "ENV":
            for key, value in env_pairs(args).items():
                env[key] = _rooted(root, value.replace("$PATH", BASE_IMAGE_PATH))
        elif keyword == "WORKDIR":
            workdir = Path(_rooted(root, args))
            workdir.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY" and not args.startswith("--from"):
            flags, sources, destination = copy_parts(args)
            target = Path(_rooted(root, destination))
            if not destination.startswith("/"):
                target = workdir / destination
            for source in sources:
                into_dir = destination.endswith("/") or len(sources) > 1
                placed = target / Path(source).name if into_dir else target
                _copy(context / source, placed)
                if "chmod" in flags:
                    placed.chmod(int(flags["chmod"], 8))
        elif keyword == "RUN":
            command = re.sub(r"--mount=\S+\s*", "", args)
            if command.startswith("pip install"):
                continue  # installs uv: the project's own, same version (test_dockerfile_shape)
            if command.startswith(("groupadd", "useradd")):
                continue  # the UID is taken from ARG APP_UID instead
            assert command.startswith("uv sync"), f"teach this test to replay: RUN {command}"
            run_env = {**os.environ, **env, "UV_PYTHON": image_python()}
            subprocess.run(
                [str(uv), *shlex.split(command)[1:]],
                cwd=workdir,
                env=run_env,
                check=True,
                capture_output=True,
                timeout=300,
            )
    return workdir


def _reachable_by_anyone(path: str) -> bool:
    real = Path(os.path.realpath(path))
    if not real.stat().st_mode & stat.S_IXOTH:
        return False
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in real.parents)


def image_python() -> str:
    """A Python 3.11 (the image's minor version) that the image's UID may run, as
    /usr/local/bin/python is in the image: ours may live under /root (pyenv)."""
    if sys.version_info[:2] == (3, 11) and _reachable_by_anyone(sys.executable):
        return sys.executable
    for candidate in ("/usr/local/bin/python3.11", "/usr/bin/python3.11"):
        if os.path.exists(candidate) and _reachable_by_anyone(candidate):
            return candidate
    require_binary("/usr/bin/python3.11", "python3.11")
    return "/usr/bin/python3.11"


@contextmanager
def replay_image() -> Iterator[ScratchImage]:
    """The runtime image in a temporary scratch root: both stages replayed, builder's
    virtualenv copied in, /dev/shm world-writable as in a container."""
    stages = dockerfile_stages()
    builder, runtime = stages["builder"], stages["runtime"]
    args = arg_defaults(stages["(global)"], runtime)
    with tempfile.TemporaryDirectory(prefix="scratch-image-") as scratch:
        scratch_path = Path(scratch)
        scratch_path.chmod(0o755)  # the image's user must reach the root below it
        context = scratch_path / "context"
        for relative in build_context():
            _copy(PROJECT_ROOT / relative, context / relative)
        # Both stages live at the same path in turn, so the virtualenv's absolute paths
        # (shebangs, pyvenv.cfg) are the ones it has in the image.
        root = scratch_path / "root"
        _replay_stage(builder, root, context, {})
        builder_root = root.rename(scratch_path / "builder")
        env: dict[str, str] = {}
        workdir = _replay_stage(runtime, root, context, env)
        for copy in runtime.all("COPY"):
            if copy.startswith("--from=builder"):
                _, source, destination = copy.split()
                _copy(builder_root / source.lstrip("/"), root / destination.lstrip("/"))
        shm = root / "dev" / "shm"
        shm.mkdir(parents=True)
        shm.chmod(0o1777)
        yield ScratchImage(
            root=root,
            env=env,
            workdir=workdir,
            uid=int(args["APP_UID"]),
            entrypoint=exec_form(runtime.all("ENTRYPOINT")[0]),
            cmd=exec_form(runtime.all("CMD")[0]),
            healthcheck=exec_form(runtime.all("HEALTHCHECK")[0].split(" CMD ", 1)[1]),
        )

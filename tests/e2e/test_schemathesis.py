"""Property-based testing of the running deployment against its own OpenAPI schema: every
check schemathesis has, in every phase (examples, coverage, fuzzing, stateful)."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.api import add_item, signup
from tooling.gunicorn import Gunicorn

pytestmark = pytest.mark.gunicorn

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
CONFIG = Path(__file__).with_name("schemathesis.toml")


async def test_the_service_keeps_its_openapi_contract(
    gunicorn_server: Gunicorn, tmp_path: Path
) -> None:
    """No 5xx; every response matches its declared status, headers and schema; every request
    the schema allows is accepted (positive_data_acceptance) and every one it forbids is
    refused (negative_data_rejection); created resources can be read back (stateful)."""
    async with httpx.AsyncClient(base_url=gunicorn_server.url, timeout=10) as http:
        account = await signup(http)  # fresh, so its token is valid for the whole run
        other = await signup(http)
        await add_item(http, account, "fuzzed")
    env = {
        **os.environ,
        "ST_ACCESS_TOKEN": account.access_token,
        "ST_USER_PUBID": account.pubid,
        "ST_OTHER_USER_PUBID": other.pubid,
    }
    result = await asyncio.to_thread(
        subprocess.run,
        [
            SCHEMATHESIS,
            "--config-file",
            str(CONFIG),
            "run",
            f"{gunicorn_server.url}/openapi.json",
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--max-examples",
            "60",
            "--request-timeout",
            "10",
            "--seed",
            "20261124",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    summary = result.stdout[-8000:]
    assert result.returncode == 0, summary
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert re.search(rf"✅ {phase}\b", summary), f"{phase} phase did not pass:\n{summary}"
    counts = re.search(r"\d+ generated, \d+ passed", summary)
    assert counts, summary
    print(f"\nschemathesis: {counts.group(0)}")

"""Locust scenarios for the service. From the project root:

    locust -f loadtests/locustfile.py -H http://127.0.0.1:8000                 # web UI
    locust -f loadtests/locustfile.py -H URL --headless -u 40 -r 10 -t 60s \\
        --csv reports/run --html reports/run.html Browser Writer            # pick by class
    locust -f loadtests/locustfile.py -H URL --headless ... --tags contention  # or by tag
    locust -f loadtests/locustfile.py -H URL --headless ... --mix browse=3,contention=2

Classes (tag): Browser (browse), Writer (write), SignupStorm (signup), Contention
(contention), PollCreator + Poller (polling), LoginAbuse (abuse: its 429s are expected);
tasks are also tagged read or write.
Gates (exit code 1 when breached): --max-fail-ratio, --p95-ms, --p99-ms, --min-rps.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Locust puts this file's directory on sys.path, not the project root that holds the
# `loadtests` package; `python -m locust` from the root works either way, `locust` may not.
_ROOT = str(Path(__file__).resolve().parents[1])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from loadtests import locust_hooks  # noqa: E402
from loadtests.scenarios.abuse import LoginAbuse  # noqa: E402
from loadtests.scenarios.browse import Browser  # noqa: E402
from loadtests.scenarios.contention import Contention  # noqa: E402
from loadtests.scenarios.polling import PollCreator, Poller  # noqa: E402
from loadtests.scenarios.signup import SignupStorm  # noqa: E402
from loadtests.scenarios.write import Writer  # noqa: E402

locust_hooks.install()

__all__ = ["Browser", "Contention", "LoginAbuse", "PollCreator", "Poller", "SignupStorm", "Writer"]

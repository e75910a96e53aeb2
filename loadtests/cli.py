"""Sample data for any running deployment:

    python -m loadtests.cli seed --url http://127.0.0.1:8000 --users 20 --items 3

creates users with items through the API and reads each back. Ad-hoc load needs no wrapper:
Locust's own command line runs the scenarios with their checks and gates (see
loadtests/locustfile.py), e.g. `locust -f loadtests/locustfile.py -H URL --headless -u 20
-t 30s --mix polling=1,contention=1`, and `python -m loadtests.proof --url URL` reconciles.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

from loadtests import checks

PASSWORD = "sample-pass-1"


def say(message: str) -> None:
    print(f"[loadtests] {message}", file=sys.stderr, flush=True)


def _seed_one(http: httpx.Client, index: int, items: int) -> str | None:
    """Create one user with items and read it back; the problem, or None."""
    name = f"sample-{uuid.uuid4().hex[:12]}"
    created = http.post(
        "/users",
        json={
            "name": name,
            "password": PASSWORD,
            "fullname": f"Sample User {index}",
            "initial_items": [f"sample item {n}" for n in range(items)],
        },
    )
    if created.status_code != 201:
        return f"POST /users: HTTP {created.status_code} {created.text[:120]}"
    if problem := checks.user_problem(created.json(), name=name):
        return problem
    pubid = created.json()["pubid"]
    read = http.get(f"/users/{pubid}", params={"incl_items": "true"})
    if read.status_code != 200:
        return f"GET /users/{pubid}: HTTP {read.status_code}"
    return checks.user_detail_problem(read.json(), pubid=pubid, name=name, item_count=items)


def seed(url: str, users: int, items: int) -> int:
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=30) as http, ThreadPoolExecutor(4) as pool:
        problems = list(pool.map(lambda i: _seed_one(http, i, items), range(users)))
    failed = [problem for problem in problems if problem]
    for problem in failed[:5]:
        say(f"  {problem}")
    say(
        f"seeded {users - len(failed)} of {users} users with {items} items each in "
        f"{time.monotonic() - started:.1f}s (password {PASSWORD!r}, names sample-*)"
    )
    say("PASS" if not failed else f"FAIL: {len(failed)} users not created or read back")
    return 0 if not failed else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.cli",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    seed_cmd = sub.add_parser("seed", help="add sample users and items through the API")
    seed_cmd.add_argument("--url", required=True)
    seed_cmd.add_argument("--users", type=int, default=20)
    seed_cmd.add_argument("--items", type=int, default=3)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return seed(args.url.rstrip("/"), args.users, args.items)


if __name__ == "__main__":
    sys.exit(main())

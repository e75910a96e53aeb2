"""Sample data for any running deployment:

    python -m loadtests.cli seed --url http://127.0.0.1:8000 --users 20 --items 3

creates users with items through the API and reads each back (`tooling.seed`, the seeder the
benchmarks use too). Ad-hoc load needs no wrapper: Locust's own command line runs the
scenarios with their checks and gates (see loadtests/locustfile.py), and
`python -m loadtests.proof --url URL` reconciles.
"""

from __future__ import annotations

import argparse
import sys
import time

from tooling.seed import PASSWORD, seed


def say(message: str) -> None:
    print(f"[loadtests] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.cli",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["seed"], help="add sample users and items")
    parser.add_argument("--url", required=True)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--items", type=int, default=3)
    args = parser.parse_args(argv)
    started = time.monotonic()
    results = seed(args.url.rstrip("/"), users=args.users, items=args.items)
    failed = [result for result in results if isinstance(result, str)]
    for problem in failed[:5]:
        say(f"  {problem}")
    say(
        f"seeded {args.users - len(failed)} of {args.users} users with {args.items} items each "
        f"in {time.monotonic() - started:.1f}s (password {PASSWORD!r}, names sample-*)"
    )
    say("PASS" if not failed else f"FAIL: {len(failed)} users not created or read back")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())

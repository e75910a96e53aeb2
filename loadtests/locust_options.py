"""Our Locust command-line options, and which user classes run: --mix weights, and classes
that --tags/--exclude-tags leave without a task dropped (Locust would spawn them and fail)."""

from __future__ import annotations

import logging
import os
from typing import Any

from locust import User
from locust.env import Environment

from loadtests import gates

logger = logging.getLogger("loadtests")


def add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("loadtests (gates, scenarios, ledger)")
    group.add_argument(
        "--mix",
        default="",
        env_var="LOCUST_MIX",
        help="Scenario weights, e.g. browse=3,write=2,signup=1,contention=2,polling=1 "
        f"(scenarios: {', '.join(gates.SCENARIOS)}; those left out do not run)",
    )
    group.add_argument("--max-fail-ratio", type=float, default=0.0, env_var="LOCUST_MAX_FAIL_RATIO")
    group.add_argument(
        "--p95-ms",
        default=gates.DEFAULT_P95_MS,
        env_var="LOCUST_P95_MS",
        help="p95 latency gate per scenario, ms (default=N applies to the others)",
    )
    group.add_argument("--p99-ms", default=gates.DEFAULT_P99_MS, env_var="LOCUST_P99_MS")
    group.add_argument(
        "--min-rps", type=float, default=0.0, env_var="LOCUST_MIN_RPS", help="0: no gate"
    )
    group.add_argument(
        "--gates-file", default="", env_var="LOCUST_GATES_FILE", help="write the verdict here"
    )
    group.add_argument(
        "--ledger-dir",
        default="",
        env_var="LOCUST_LEDGER_DIR",
        help="record created/deleted pubids here (one file per process)",
    )
    group.add_argument(
        "--run-id",
        default=os.urandom(4).hex(),
        env_var="LOCUST_RUN_ID",
        help="names the shared contention accounts (a master forwards its own)",
    )
    group.add_argument("--hot-accounts", type=int, default=2, env_var="LOCUST_HOT_ACCOUNTS")


def _runnable(user_class: type[User], include: set[str], exclude: set[str]) -> bool:
    for task in user_class.tasks:
        tags: set[str] = getattr(task, "locust_tag_set", set())
        if include and not tags & include:
            continue
        if exclude and tags & exclude:
            continue
        return True
    return False


def select_user_classes(environment: Environment) -> None:
    """Apply --mix weights and drop classes that --tags/--exclude-tags leave without tasks
    (Locust would otherwise spawn them and fail)."""
    options = environment.parsed_options
    mix = gates.parse_spec(options.mix) if options and options.mix else {}
    include = set(getattr(options, "tags", None) or ())
    exclude = set(getattr(options, "exclude_tags", None) or ())
    kept = []
    for user_class in environment.user_classes:
        scenario = getattr(user_class, "scenario", "")
        if mix:
            user_class.weight = round(
                mix.get(scenario, 0) * getattr(user_class, "weight_factor", 1)
            )
        if user_class.weight > 0 and _runnable(user_class, include, exclude):
            kept.append(user_class)
    if not kept:
        raise ValueError("no user class left to run: check --mix, --tags and the class names")
    environment.user_classes[:] = kept
    logger.info("scenarios: %s", ", ".join(f"{c.__name__}={c.weight}" for c in kept))

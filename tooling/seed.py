"""The one seeder: users with items, created through the API of a running deployment, each
read back and checked (`python -m loadtests.cli seed`; the benchmarks also log each user in
and hand ids and tokens to wrk)."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import httpx

from tooling import checks

PASSWORD = "sample-pass-1"


@dataclass(frozen=True, slots=True)
class SeededUser:
    name: str
    pubid: str
    items: tuple[str, ...]
    token: str = ""  # only with `login`


def _post(http: httpx.Client, path: str, **kwargs: Any) -> httpx.Response:
    """POST, retried while the hash admission control sheds a burst (503 with Retry-After):
    sign-ups and logins both hash. At most 5 attempts, no wait after the last."""
    answer = http.post(path, **kwargs)
    for attempt in range(1, 5):
        if answer.status_code != 503:
            break
        time.sleep(float(answer.headers.get("Retry-After", 1)) * attempt)
        answer = http.post(path, **kwargs)
    return answer


def seed_user(http: httpx.Client, name: str, items: int) -> SeededUser | str:
    """Create one user with `items` items in one request and read it back; the user, or what
    went wrong."""
    body = {
        "name": name,
        "password": PASSWORD,
        "fullname": f"Sample User {name}",
        "initial_items": [f"sample item {n}" for n in range(items)],
    }
    created = _post(http, "/users", json=body)
    if created.status_code != 201:
        return f"POST /users: HTTP {created.status_code} {created.text[:120]}"
    if problem := checks.user_problem(created.json(), name=name):
        return problem
    pubid = created.json()["pubid"]
    read = http.get(f"/users/{pubid}", params={"incl_items": "true"})
    if read.status_code != 200:
        return f"GET /users/{pubid}: HTTP {read.status_code}"
    detail = read.json()
    if problem := checks.user_detail_problem(detail, pubid=pubid, name=name, item_count=items):
        return problem
    return SeededUser(name, pubid, tuple(item["pubid"] for item in detail["items"]))


def log_in(http: httpx.Client, user: SeededUser | str) -> SeededUser | str:
    """The user with its bearer token (or the problem so far, or the login's)."""
    if isinstance(user, str):
        return user
    answer = _post(http, "/auth/token", data={"username": user.name, "password": PASSWORD})
    if answer.status_code != 200:
        return f"POST /auth/token: HTTP {answer.status_code} {answer.text[:120]}"
    return replace(user, token=answer.json()["access_token"])


def seed(
    url: str, *, users: int, items: int, login: bool = False, prefix: str = "sample"
) -> list[SeededUser | str]:
    """`users` users, four at a time, named `PREFIX-<random>-NNNN` (so any database takes
    them); each entry is the user or its problem."""
    run = f"{prefix}-{uuid.uuid4().hex[:8]}"

    def one(index: int) -> SeededUser | str:
        user = seed_user(http, f"{run}-{index:04d}", items)
        return log_in(http, user) if login else user

    with httpx.Client(base_url=url, timeout=30) as http, ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(users)))

"""Browser: read-heavy. List users, open one with its items, list and read its own items."""

from __future__ import annotations

import random

from locust import between, tag, task

from loadtests import checks
from loadtests.scenarios.base import Account, ApiUser

INITIAL_ITEMS = 3
PAGE = 20


class Browser(ApiUser):
    scenario = "browse"
    weight = 3
    wait_time = between(0.05, 0.4)

    account: Account | None = None
    seen: list[str]

    def on_start(self) -> None:
        self.seen = []
        account = self.signup("b", items=INITIAL_ITEMS)
        if account is not None and self.login(account):
            self.learn_items(account, exactly=INITIAL_ITEMS)
            self.account = account

    @tag("browse", "read")
    @task(3)
    def list_users(self) -> None:
        offset = random.choice((0, 0, PAGE, 2 * PAGE))
        reply = self.call(
            "GET",
            f"/users?limit={PAGE}&offset={offset}",
            name="/users",
            check=lambda body: checks.users_page_problem(body, limit=PAGE),
            # A new visit: a new connection, which may land on any worker (kept-alive
            # connections stay with the worker that accepted them).
            close=True,
        )
        if reply is not None:
            self.seen = [user["pubid"] for user in reply.body["users"]][:PAGE]

    @tag("browse", "read")
    @task(3)
    def user_with_items(self) -> None:
        if not self.seen:
            return
        pubid = random.choice(self.seen)
        # Another client may have deleted that account since it was listed: a 404 that
        # says so is a right answer; anything else is checked in full.
        self.call(
            "GET",
            f"/users/{pubid}?incl_items=true",
            name="/users/{pubid}",
            expect=(200, 404),
            check=lambda body: (
                checks.detail_problem(body, contains="not found")
                if "detail" in body
                else checks.user_detail_problem(body, pubid=pubid)
            ),
        )

    @tag("browse", "read")
    @task(2)
    def own_profile(self) -> None:
        account = self.account
        if account is None:
            return
        self.call(
            "GET",
            f"/users/{account.pubid}?incl_items=true",
            name="/users/{pubid}",
            check=lambda body: checks.user_detail_problem(
                body, pubid=account.pubid, name=account.name, item_count=len(account.items)
            ),
        )

    @tag("browse", "read")
    @task(2)
    def own_items(self) -> None:
        account = self.account
        if account is None:
            return
        self.check_own_items(account, limit=50)

    @tag("browse", "read")
    @task(2)
    def read_own_item(self) -> None:
        account = self.account
        if account is None or not account.items:
            return
        pubid, name = random.choice(list(account.items.items()))
        self.read_item(account, pubid, name=name)

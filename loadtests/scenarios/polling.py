"""Create-while-polling: some clients create users and items while others poll the user list.

Creators publish each account once its creation is acknowledged, with the number of items
acknowledged so far. Pollers then require, from whichever worker answers, that such an
account is there (never a 404: these accounts are never deleted) with at least that many
items: a write acknowledged by one worker is visible to every other one."""

from __future__ import annotations

import random

from locust import between, tag, task

from loadtests import checks
from loadtests.scenarios.base import STATE, Account, ApiUser, unique_name

PAGE = 100
MAX_ACCOUNTS = 10


class PollCreator(ApiUser):
    scenario = "polling"
    weight = 1
    wait_time = between(0.05, 0.3)

    accounts: list[Account]

    def on_start(self) -> None:
        self.accounts = []

    @tag("polling", "write")
    @task(1)
    def create_user(self) -> None:
        if len(self.accounts) >= MAX_ACCOUNTS:
            self.accounts.pop(0)
        items = random.randint(0, 3)
        account = self.signup("p", items=items)
        if account is None:
            return
        STATE.visible[account.pubid] = (account.name, items)
        if self.login(account):
            self.accounts.append(account)

    @tag("polling", "write")
    @task(3)
    def add_item(self) -> None:
        if not self.accounts:
            return
        account = random.choice(self.accounts)
        if self.create_item(account, unique_name("pi")) is not None:
            name, count = STATE.visible[account.pubid]
            STATE.visible[account.pubid] = (name, count + 1)


class Poller(ApiUser):
    scenario = "polling"
    weight = 1
    weight_factor = 2  # two pollers per creator in a --mix
    wait_time = between(0.05, 0.3)

    offset = 0

    @tag("polling", "read")
    @task(2)
    def poll_list(self) -> None:
        reply = self.call(
            "GET",
            f"/users?limit={PAGE}&offset={self.offset}",
            name="/users",
            check=lambda body: checks.users_page_problem(body, limit=PAGE),
        )
        if reply is not None:
            # Walk the list page by page, and start again at the end.
            self.offset = self.offset + PAGE if len(reply.body["users"]) == PAGE else 0

    @tag("polling", "read")
    @task(3)
    def acknowledged_user_is_visible(self) -> None:
        if not STATE.visible:
            return
        pubid = random.choice(list(STATE.visible))
        name, items = STATE.visible[pubid]  # as acknowledged before this request started
        self.call(
            "GET",
            f"/users/{pubid}?incl_items=true",
            name="/users/{pubid}",
            check=lambda body: checks.user_detail_problem(
                body, pubid=pubid, name=name, item_count_at_least=items
            ),
        )

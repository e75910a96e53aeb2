"""Writer: sign up, log in, create / update / delete its own items, refresh its tokens.

Only this client writes to its account, so it knows exactly what the server must hold and
checks every answer against that."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from locust import between, tag, task

from loadtests import checks
from loadtests.scenarios.base import Account, ApiUser, unique_name

MAX_ITEMS = 25
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def random_timestamp() -> datetime:
    """A distinct aware timestamp (microsecond precision, as PostgreSQL keeps it)."""
    return EPOCH + timedelta(microseconds=random.randrange(10**15))


class Writer(ApiUser):
    scenario = "write"
    weight = 2
    wait_time = between(0.05, 0.4)

    account: Account | None = None

    def on_start(self) -> None:
        account = self.signup("w")
        if account is not None and self.login(account):
            self.account = account

    @tag("write")
    @task(4)
    def add_item(self) -> None:
        account = self.account
        if account is None:
            return
        if len(account.items) >= MAX_ITEMS:
            self.delete_item(account, random.choice(list(account.items)))
            return
        self.create_item(account, unique_name("wi"))

    @tag("write")
    @task(3)
    def update_item(self) -> None:
        account = self.account
        if account is None or not account.items:
            return
        pubid = random.choice(list(account.items))
        added = random_timestamp()
        if self.set_item_added(account, pubid, added) is None:
            return
        # Read it back: the committed value, whichever worker answers.
        self.read_item(account, pubid, added=added)

    @tag("write")
    @task(2)
    def delete_item_and_check_gone(self) -> None:
        account = self.account
        if account is None or not account.items:
            return
        pubid = random.choice(list(account.items))
        if not self.delete_item(account, pubid):
            return
        self.call(
            "GET",
            f"/items/{pubid}",
            name="/items/{pubid}",
            expect=(404,),
            account=account,
            check=lambda body: checks.detail_problem(body, contains="not found"),
        )

    @tag("write", "read")
    @task(2)
    def list_own_items(self) -> None:
        account = self.account
        if account is None:
            return
        self.check_own_items(account)

    @tag("write")
    @task(1)
    def update_fullname(self) -> None:
        account = self.account
        if account is None:
            return
        fullname = f"Writer {random.randrange(10**9)}"
        self.call(
            "PUT",
            f"/users/{account.pubid}",
            name="/users/{pubid}",
            account=account,
            json={"fullname": fullname},
            check=lambda body: checks.user_problem(
                body, pubid=account.pubid, name=account.name, fullname=fullname
            ),
        )

    @tag("write")
    @task(1)
    def refresh_tokens(self) -> None:
        account = self.account
        if account is None:
            return
        if self.refresh(account):
            # The new access token must work at once, on whichever worker answers.
            self.check_own_items(account)

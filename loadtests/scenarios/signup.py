"""Signup storm: many concurrent sign-ups and logins (each a bcrypt hash or verify on the
server), with duplicate names, wrong passwords and account deletions, mixed with reads."""

from __future__ import annotations

import random

from locust import between, tag, task

from loadtests import checks
from loadtests.scenarios.base import STATE, Account, ApiUser

KEEP_ACCOUNTS = 5


class SignupStorm(ApiUser):
    scenario = "signup"
    weight = 2
    wait_time = between(0.0, 0.2)

    accounts: list[Account]

    def on_start(self) -> None:
        self.accounts = []

    @tag("signup", "write")
    @task(4)
    def sign_up_and_log_in(self) -> None:
        items = random.choice((0, 0, 1, 2))
        account = self.signup("s", items=items, fullname=random.choice((None, "Storm Trooper")))
        if account is None or not self.login(account):
            return
        # The fresh token works at once, and the items came with the user.
        if self.learn_items(account, exactly=items):
            self.accounts.append(account)
        if len(self.accounts) > KEEP_ACCOUNTS:
            self.accounts.pop(0)

    @tag("signup")
    @task(1)
    def duplicate_name(self) -> None:
        if not self.accounts:
            return
        taken = random.choice(self.accounts).name
        self.call(
            "POST",
            "/users",
            name="/users",
            expect=(409,),
            json={"name": taken, "password": "another-pass-7"},
            check=lambda body: checks.detail_problem(body, contains="taken"),
        )

    @tag("signup")
    @task(1)
    def wrong_password(self) -> None:
        if not self.accounts:
            return
        account = random.choice(self.accounts)
        # From an address of its own each time (X-Forwarded-For, trusted from loopback):
        # the per-address login limit is for abuse (scenarios/abuse.py), not for this storm.
        # The per-user limit can still be reached by a long-kept account: 429 is expected.
        address = f"198.18.{random.randrange(256)}.{random.randrange(1, 255)}"
        self.call(
            "POST",
            "/auth/token",
            name="/auth/token",
            expect=(401, 429),
            form={"username": account.name, "password": "wrong-pass-9"},
            headers={"X-Forwarded-For": address},
            check=lambda body: (
                checks.detail_problem(body, contains="incorrect")
                and checks.detail_problem(body, contains="too many")
            ),
        )

    @tag("signup", "read")
    @task(3)
    def read_users(self) -> None:
        reply = self.call(
            "GET",
            "/users?limit=10",
            name="/users",
            check=lambda body: checks.users_page_problem(body, limit=10),
        )
        if reply is None or not self.accounts:
            return
        account = random.choice(self.accounts)
        self.call(
            "GET",
            f"/users/{account.pubid}",
            name="/users/{pubid}",
            check=lambda body: checks.user_problem(body, pubid=account.pubid, name=account.name),
        )

    @tag("signup", "write")
    @task(1)
    def delete_account(self) -> None:
        if not self.accounts:
            return
        account = self.accounts.pop(random.randrange(len(self.accounts)))
        reply = self.call(
            "DELETE",
            f"/users/{account.pubid}",
            name="/users/{pubid}",
            expect=(204,),
            account=account,
        )
        if reply is None:
            return
        if STATE.ledger is not None:
            STATE.ledger.user_deleted(account.pubid, items=len(account.items))
        self.call(
            "GET",
            f"/users/{account.pubid}",
            name="/users/{pubid}",
            expect=(404,),
            check=lambda body: checks.detail_problem(body, contains="not found"),
        )

"""Contention: many clients, logged in to the same few accounts, update the same rows at once
(the account's fullname, its items' timestamps) and cross rows (item A then B against B
then A). Every acknowledged value goes to the ledger: the proof then checks that each hot
row holds one of the values some client was told was written, i.e. no lost or torn write.

The hot accounts are named after the run id, so every process of a distributed run (the
master forwards its --run-id) contends on the same rows; whoever creates one first wins,
the others get a 409 and log in."""

from __future__ import annotations

import base64
import itertools
import json
import os
import random
from typing import Any

from locust import between, tag, task

from loadtests import checks
from loadtests.scenarios.base import PASSWORD, STATE, Account, ApiUser
from loadtests.scenarios.write import random_timestamp

HOT_ITEMS = 4
_sequence = itertools.count()


def hot_account_name(run_id: str, index: int) -> str:
    return f"hot{index}-{run_id}"[:30]


class Contention(ApiUser):
    scenario = "contention"
    weight = 2
    wait_time = between(0.0, 0.05)

    account: Account | None = None

    def on_start(self) -> None:
        options: Any = self.environment.parsed_options
        run_id = str(getattr(options, "run_id", "") or "local")
        accounts = max(1, int(getattr(options, "hot_accounts", 2) or 2))
        account = Account(hot_account_name(run_id, random.randrange(accounts)), PASSWORD)
        reply = self.call(
            "POST",
            "/users",
            name="/users",
            expect=(201, 409),
            json={
                "name": account.name,
                "password": account.password,
                "initial_items": [f"hot-item-{n}" for n in range(HOT_ITEMS)],
            },
            check=lambda body: (
                checks.detail_problem(body, contains="taken")
                if "detail" in body
                else checks.user_problem(body, name=account.name)
            ),
        )
        if reply is None:
            return
        if reply.status == 201 and STATE.ledger is not None:
            STATE.ledger.user_created(reply.body["pubid"], items=HOT_ITEMS)
        reply = self.call(
            "POST",
            "/auth/token",
            name="/auth/token",
            form={"username": account.name, "password": account.password},
            check=checks.tokens_problem,
        )
        if reply is None:
            return
        self._store_tokens(account, reply.body)
        account.pubid = _subject(account.access_token)
        if self.learn_items(account, exactly=HOT_ITEMS):
            self.account = account

    def _unique(self) -> str:
        return f"hot {os.getpid()} {next(_sequence)} {random.randrange(10**6)}"

    def _set_item(self, account: Account, pubid: str) -> bool:
        added = random_timestamp()
        reply = self.set_item_added(account, pubid, added)
        if reply is not None and STATE.ledger is not None:
            STATE.ledger.hot_write("items", pubid, added.isoformat())
        return reply is not None

    @tag("contention", "write")
    @task(3)
    def same_item(self) -> None:
        if self.account is not None:
            self._set_item(self.account, random.choice(list(self.account.items)))

    @tag("contention", "write")
    @task(2)
    def crossing_items(self) -> None:
        account = self.account
        if account is None:
            return
        first, second = random.sample(sorted(account.items), 2)
        if self._set_item(account, first):
            self._set_item(account, second)

    @tag("contention", "write")
    @task(2)
    def same_user(self) -> None:
        account = self.account
        if account is None:
            return
        fullname = self._unique()
        reply = self.call(
            "PUT",
            f"/users/{account.pubid}",
            name="/users/{pubid}",
            account=account,
            json={"fullname": fullname},
            check=lambda body: checks.user_problem(
                body, pubid=account.pubid, name=account.name, fullname=fullname
            ),
        )
        if reply is not None and STATE.ledger is not None:
            STATE.ledger.hot_write("users", account.pubid, fullname)

    @tag("contention", "read")
    @task(2)
    def read_hot_rows(self) -> None:
        account = self.account
        if account is None:
            return
        self.call(
            "GET",
            f"/users/{account.pubid}?incl_items=true",
            name="/users/{pubid}",
            check=lambda body: (
                checks.user_detail_problem(
                    body, pubid=account.pubid, name=account.name, item_count=HOT_ITEMS
                )
                or _fullname_problem(body)
            ),
        )


def _fullname_problem(body: dict[str, Any]) -> str | None:
    fullname = body.get("fullname")
    if fullname is None or str(fullname).startswith("hot "):
        return None
    return f"hot account fullname {fullname!r} was written by no contention client"


def _subject(token: str) -> str:
    """The account's pubid from its access token's `sub` claim (no verification needed:
    the server checks the token on every request that uses it)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return str(claims["sub"])

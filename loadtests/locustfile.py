"""Locust scenarios for the service. From the project root (Locust puts it on sys.path):

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

import itertools
import os
import random
from functools import partial
from typing import Any

from locust import between, tag, task

from loadtests import locust_hooks  # noqa: F401  (importing registers the hooks)
from loadtests.base import (
    STATE,
    ApiUser,
    forwarded_for,
    needed,
    not_found,
    random_timestamp,
    taken,
    unique_name,
)
from tooling import checks
from tooling.ledger import HOT_WRITE, USER_DELETED

BROWSE_PAGE = 20  # users per page
INITIAL_ITEMS = 3  # a browser's own items, created with it
MAX_ITEMS = 25  # a writer deletes one of its items rather than create more
KEEP_ACCOUNTS = 5  # accounts a signup storm user keeps for its logins and deletions
HOT_ACCOUNTS, HOT_ITEMS = 2, 4  # rows the contention users share
POLL_PAGE = 100
MAX_ACCOUNTS = 10  # accounts a poll creator keeps adding items to
_sequence = itertools.count()


class Browser(ApiUser):
    """Browser: read-heavy. List users, open one with its items, list and read its own items."""

    scenario = "browse"
    weight = 3
    wait_time = between(0.05, 0.4)

    seen: list[str]

    def on_start(self) -> None:
        self.seen = []
        self.account = needed(self.join(unique_name("b"), items=INITIAL_ITEMS))

    @tag("browse", "read")
    @task(3)
    def list_users(self) -> None:
        offset = random.choice((0, 0, BROWSE_PAGE, 2 * BROWSE_PAGE))
        # A new visit: a new connection, which may land on any worker (kept-alive
        # connections stay with the worker that accepted them).
        users = self.users_page(BROWSE_PAGE, offset, close=True)
        if users is not None:
            self.seen = [user["pubid"] for user in users]

    @tag("browse", "read")
    @task(3)
    def user_with_items(self) -> None:
        if not self.seen:
            return
        # Another client may have deleted that account since it was listed: a 404 that
        # says so is a right answer; anything else is checked in full.
        self.user_detail(random.choice(self.seen), missing_ok=True)

    @tag("browse", "read")
    @task(2)
    def own_profile(self) -> None:
        account = self.account
        self.user_detail(account.pubid, name=account.name, item_count=len(account.items))

    @tag("browse", "read")
    @task(2)
    def own_items(self) -> None:
        self.list_items(self.account, limit=50)

    @tag("browse", "read")
    @task(2)
    def read_own_item(self) -> None:
        pubid, name = random.choice(list(self.account.items.items()))
        self.read_item(self.account, pubid, name=name)


class Writer(ApiUser):
    """Writer: sign up, log in, create / update / delete its own items, refresh its tokens.

    Only this client writes to its account, so it knows exactly what the server must hold and
    checks every answer against that."""

    scenario = "write"
    weight = 2
    wait_time = between(0.05, 0.4)

    def on_start(self) -> None:
        self.account = needed(self.join(unique_name("w")))

    @tag("write")
    @task(4)
    def add_item(self) -> None:
        if len(self.account.items) >= MAX_ITEMS:
            self.delete_item(self.account, random.choice(list(self.account.items)))
        else:
            self.create_item(self.account, unique_name("wi"))

    @tag("write")
    @task(3)
    def update_item(self) -> None:
        if not self.account.items:
            return
        pubid = random.choice(list(self.account.items))
        added = random_timestamp()
        if self.set_item_added(self.account, pubid, added):
            # Read it back: the committed value, whichever worker answers.
            self.read_item(self.account, pubid, added=added)

    @tag("write")
    @task(2)
    def delete_item_and_check_gone(self) -> None:
        account = self.account
        if not account.items:
            return
        pubid = random.choice(list(account.items))
        if self.delete_item(account, pubid):
            self.call("GET", f"/items/{pubid}", {404: not_found}, account=account)

    @tag("write", "read")
    @task(2)
    def list_own_items(self) -> None:
        self.list_items(self.account)

    @tag("write")
    @task(1)
    def update_fullname(self) -> None:
        self.set_fullname(self.account, f"Writer {random.randrange(10**9)}")

    @tag("write")
    @task(1)
    def refresh_tokens(self) -> None:
        if self.refresh(self.account):
            # The new access token must work at once, on whichever worker answers.
            self.list_items(self.account)


class SignupStorm(ApiUser):
    """Signup storm: many concurrent sign-ups and logins (each a bcrypt hash or verify on the
    server), with duplicate names, wrong passwords and account deletions, mixed with reads."""

    scenario = "signup"
    weight = 2
    wait_time = between(0.0, 0.2)

    @tag("signup", "write")
    @task(4)
    def sign_up_and_log_in(self) -> None:
        fullname = random.choice((None, "Storm Trooper"))
        account = self.join(unique_name("s"), items=random.choice((0, 0, 1, 2)), fullname=fullname)
        if account is not None:
            self.accounts = [*self.accounts, account][-KEEP_ACCOUNTS:]

    @tag("signup")
    @task(1)
    def duplicate_name(self) -> None:
        if self.accounts:
            json = {"name": random.choice(self.accounts).name, "password": "another-pass-7"}
            self.call("POST", "/users", {409: taken}, json=json)

    @tag("signup")
    @task(1)
    def wrong_password(self) -> None:
        # From an address of its own each time: the per-address login limit is for abuse
        # (LoginAbuse), not for this storm. The per-user limit can still be reached
        # by a long-kept account: 429 is expected.
        if self.accounts:
            name = random.choice(self.accounts).name
            self.wrong_login(name, "wrong-pass-9", forwarded_for(18))

    @tag("signup", "read")
    @task(3)
    def read_users(self) -> None:
        if self.users_page(10) is None or not self.accounts:
            return
        account = random.choice(self.accounts)
        check = partial(checks.user_problem, pubid=account.pubid, name=account.name)
        self.call("GET", f"/users/{account.pubid}", {200: check})

    @tag("signup", "write")
    @task(1)
    def delete_account(self) -> None:
        if not self.accounts:
            return
        account = self.accounts.pop(random.randrange(len(self.accounts)))
        path = f"/users/{account.pubid}"
        if self.call("DELETE", path, {204: None}, account=account) is not None:
            STATE.record(USER_DELETED, pubid=account.pubid, items=len(account.items))
            self.call("GET", path, {404: not_found})


def _fullname_problem(body: dict[str, Any]) -> str | None:
    fullname = body.get("fullname")
    if fullname is None or str(fullname).startswith("hot "):
        return None
    return f"hot account fullname {fullname!r} was written by no contention client"


class Contention(ApiUser):
    """Contention: many clients, logged in to the same few accounts, update the same rows at once
    (the account's fullname, its items' timestamps) and cross rows (item A then B against B
    then A). Every acknowledged value goes to the ledger: the proof then checks that each hot
    row holds one of the values some client was told was written, i.e. no lost or torn write.

    The hot accounts are named after the run id, so every process of a distributed run (the
    master forwards its --run-id) contends on the same rows; whoever creates one first wins,
    the others get a 409 and log in."""

    scenario = "contention"
    weight = 2
    wait_time = between(0.0, 0.05)

    def on_start(self) -> None:
        options: Any = self.environment.parsed_options
        name = f"hot{random.randrange(HOT_ACCOUNTS)}-{options.run_id}"[:30]
        self.account = needed(self.join(name, items=HOT_ITEMS, taken_ok=True))

    def _set_item(self, pubid: str) -> bool:
        added = random_timestamp()
        if not self.set_item_added(self.account, pubid, added):
            return False
        STATE.record(HOT_WRITE, table="items", pubid=pubid, value=added.isoformat())
        return True

    @tag("contention", "write")
    @task(3)
    def same_item(self) -> None:
        self._set_item(random.choice(list(self.account.items)))

    @tag("contention", "write")
    @task(2)
    def crossing_items(self) -> None:
        first, second = random.sample(sorted(self.account.items), 2)
        if self._set_item(first):
            self._set_item(second)

    @tag("contention", "write")
    @task(2)
    def same_user(self) -> None:
        fullname = f"hot {os.getpid()} {next(_sequence)} {random.randrange(10**6)}"
        if self.set_fullname(self.account, fullname):
            STATE.record(HOT_WRITE, table="users", pubid=self.account.pubid, value=fullname)

    @tag("contention", "read")
    @task(2)
    def read_hot_rows(self) -> None:
        account = self.account
        self.user_detail(
            account.pubid, name=account.name, item_count=HOT_ITEMS, extra=_fullname_problem
        )


class PollCreator(ApiUser):
    """Create-while-polling: some clients create users and items while others poll the user list.

    Creators publish each account once its creation is acknowledged, with the number of items
    acknowledged so far. Pollers then require, from whichever worker answers, that such an
    account is there (never a 404: these accounts are never deleted) with at least that many
    items: a write acknowledged by one worker is visible to every other one."""

    scenario = "polling"
    weight = 1
    wait_time = between(0.05, 0.3)

    @tag("polling", "write")
    @task(1)
    def create_user(self) -> None:
        items = random.randint(0, 3)
        account = self.join(unique_name("p"), items=items)
        if account is not None:
            STATE.visible[account.pubid] = (account.name, items)
            self.accounts = [*self.accounts, account][-MAX_ACCOUNTS:]

    @tag("polling", "write")
    @task(3)
    def add_item(self) -> None:
        if not self.accounts:
            return
        account = random.choice(self.accounts)
        if self.create_item(account, unique_name("pi")):
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
        users = self.users_page(POLL_PAGE, self.offset)
        if users is not None:
            # Walk the list page by page, and start again at the end.
            self.offset = self.offset + POLL_PAGE if len(users) == POLL_PAGE else 0

    @tag("polling", "read")
    @task(3)
    def acknowledged_user_is_visible(self) -> None:
        if STATE.visible:
            pubid = random.choice(list(STATE.visible))
            name, items = STATE.visible[pubid]  # as acknowledged before this request started
            self.user_detail(pubid, name=name, item_count_at_least=items)


class LoginAbuse(ApiUser):
    """Login abuse: each user guesses one victim's password from one address of its own, fast.
    The first LOGIN_FAILURES_PER_USER_ADDRESS (10) guesses per window are evaluated (401), then
    every guess is refused before any bcrypt work (429, expected). Meanwhile the victim logs in
    from another address and must get in: one attacking address cannot lock the user out.
    The proof reconciles Locust's 429s with the server's auth_logins_throttled_total."""

    scenario = "abuse"
    weight = 1
    wait_time = between(0.0, 0.1)

    def on_start(self) -> None:
        self.account = needed(self.signup(unique_name("v")))  # the victim
        self.attacker_headers = forwarded_for(18)
        self.victim_headers = forwarded_for(19)

    @tag("abuse")
    @task(8)
    def guess(self) -> None:
        guess = f"guess-{random.randrange(10**6)}"
        self.wrong_login(self.account.name, guess, self.attacker_headers)

    @tag("abuse")
    @task(1)
    def victim_logs_in(self) -> None:
        self.login(self.account, self.victim_headers)

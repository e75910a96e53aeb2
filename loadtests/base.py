"""The base user: checked requests named by route template, accounts, the requests several
scenarios make, and the process state (ledger, acknowledged accounts) they share."""

from __future__ import annotations

import base64
import json as jsonlib
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, ClassVar
from urllib.parse import urlencode

from locust import FastHttpUser
from locust.exception import StopUser

from tooling import checks
from tooling.checks import Check
from tooling.ledger import ITEM_CREATED, ITEM_DELETED, USER_CREATED, LedgerWriter

PASSWORD = "loadtest-pass-42"
TOKEN_REFRESH_AFTER_SECONDS = 300.0
Expect = Mapping[int, Check | None]  # the statuses that are right, each with its content check


@dataclass
class Account:
    name: str  # its password is PASSWORD
    pubid: str = ""
    access_token: str = ""
    refresh_token: str = ""
    issued_at: float = 0.0
    items: dict[str, str] = field(default_factory=dict)  # pubid -> name, as this client knows


@dataclass
class ProcessState:
    """One per Locust process; gevent runs every user of the process on one thread."""

    ledger: LedgerWriter | None = None
    requests: Counter[str] = field(default_factory=Counter)
    worker_pids: Counter[str] = field(default_factory=Counter)
    throttled_logins: int = 0  # 429 answers to POST /auth/token
    # create-while-polling: users whose creation (and item count) was acknowledged
    visible: dict[str, tuple[str, int]] = field(default_factory=dict)

    def record(self, event: str, **fields: Any) -> None:
        if self.ledger is not None:
            self.ledger.write(event, **fields)


STATE = ProcessState()


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:20]}"[:30]


def random_timestamp() -> datetime:
    """A distinct aware timestamp (microsecond precision, as PostgreSQL keeps it)."""
    return datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=random.randrange(10**15))


def forwarded_for(block: int) -> dict[str, str]:
    """A benchmarking-range address (RFC 2544) as X-Forwarded-For: the service trusts that
    header from loopback (FORWARDED_ALLOW_IPS), so each is a client of its own."""
    return {"X-Forwarded-For": f"198.{block}.{random.randrange(256)}.{random.randrange(1, 255)}"}


def needed(account: Account | None) -> Account:
    """A user that could not set up its account stops (the failed request is counted)."""
    if account is None:
        raise StopUser
    return account


def token_subject(token: str) -> str:
    """The account's pubid from its access token's `sub` claim (no verification needed: the
    server checks the token on every request that uses it)."""
    payload = token.split(".")[1]
    return str(jsonlib.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"])


def not_found(body: Any) -> str | None:
    return checks.detail_problem(body, contains="not found")


def taken(body: Any) -> str | None:
    return checks.detail_problem(body, contains="taken")


# A refused login: a wrong password (401), or too many attempts (429).
REFUSED: Expect = {
    401: partial(checks.detail_problem, contains="incorrect"),
    429: partial(checks.detail_problem, contains="too many"),
}


class ApiUser(FastHttpUser):
    """Every request goes through `call`: named by route template (so Locust's counts line
    up with the server's /metrics), checked for status and content, and failed with the
    reason otherwise."""

    abstract = True
    scenario: ClassVar[str] = ""
    weight_factor: ClassVar[int] = 1
    network_timeout = 30.0
    connection_timeout = 10.0
    account: Account  # the user's own, for the scenarios that keep one

    def on_start(self) -> None:
        self.accounts: list[Account] = []  # for the scenarios that keep several

    def context(self) -> dict[str, Any]:
        return {"scenario": self.scenario}

    def call(
        self,
        method: str,
        path: str,
        expect: Expect,
        *,
        account: Account | None = None,
        form: dict[str, str] | None = None,
        **send: Any,
    ) -> Any:
        """The decoded body ({} for 204) when the status is one `expect`ed and its check (if
        any) passes, else None. `send`: the request's json and headers."""
        headers = send["headers"] = dict(send.get("headers") or {})
        if account is not None:
            if time.monotonic() - account.issued_at > TOKEN_REFRESH_AFTER_SECONDS:
                self.refresh(account)
            headers["Authorization"] = f"Bearer {account.access_token}"
        if form is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            send["data"] = urlencode(form)
        name = re.sub(r"/[0-9a-f-]{36}", "/{pubid}", path.split("?", maxsplit=1)[0])
        with self.client.request(method, path, name=name, catch_response=True, **send) as response:
            status = int(response.status_code or 0)
            if status not in expect:
                text = (response.text or "")[:200] if status else str(response.error)
                response.failure(f"HTTP {status}, expected {'/'.join(map(str, expect))}: {text}")
                return None
            try:
                body = response.json() if status != 204 else {}
                problem = check(body) if (check := expect[status]) else None
            except Exception as exc:  # nothing may escape the with-block unreported
                problem = f"body not JSON or check raised: {exc!r}"
            if problem:
                response.failure(problem)
                return None
            response.success()
            return body

    # -- accounts -------------------------------------------------------------------------
    def signup(
        self, name: str, *, items: int = 0, fullname: str | None = None, taken_ok: bool = False
    ) -> Account | None:
        """POST /users; with `taken_ok`, a 409 for a name another client took first is right
        too (the account then has no pubid until it logs in)."""
        created = partial(checks.user_problem, name=name, fullname=fullname)
        json: dict[str, Any] = {"name": name, "password": PASSWORD, "fullname": fullname}
        json["initial_items"] = [f"item-{n}" for n in range(items)]
        expect: Expect = {201: created, 409: taken} if taken_ok else {201: created}
        body = self.call("POST", "/users", expect, json=json)
        if body is None:
            return None
        account = Account(name, pubid=body.get("pubid", ""))
        if account.pubid:
            STATE.record(USER_CREATED, pubid=account.pubid, items=items)
        return account

    def join(self, name: str, *, items: int = 0, **options: Any) -> Account | None:
        """Sign up and log in; the fresh token must work at once, and list the items the
        account was created with."""
        account = self.signup(name, items=items, **options)
        if account is None or not self.login(account):
            return None
        return account if self.list_items(account, count=items) else None

    def login(self, account: Account, headers: dict[str, str] | None = None) -> bool:
        form = {"username": account.name, "password": PASSWORD}
        return self._tokens(account, "/auth/token", form, headers)

    def refresh(self, account: Account) -> bool:
        return self._tokens(account, "/auth/refresh", {"refresh_token": account.refresh_token})

    def _tokens(
        self, account: Account, path: str, form: dict[str, str], headers: Any = None
    ) -> bool:
        body = self.call("POST", path, {200: checks.tokens_problem}, form=form, headers=headers)
        if body is None:
            return False
        account.access_token = body["access_token"]
        account.refresh_token = body["refresh_token"]
        account.issued_at = time.monotonic()
        account.pubid = token_subject(account.access_token)
        return True

    def wrong_login(self, username: str, password: str, headers: dict[str, str]) -> None:
        form = {"username": username, "password": password}
        self.call("POST", "/auth/token", REFUSED, form=form, headers=headers)

    # -- users ----------------------------------------------------------------------------
    def users_page(self, limit: int, offset: int = 0, *, close: bool = False) -> Any:
        check = partial(checks.users_page_problem, limit=limit)
        headers = {"Connection": "close"} if close else None
        path = f"/users?limit={limit}&offset={offset}"
        body = self.call("GET", path, {200: check}, headers=headers)
        return None if body is None else body["users"]

    def user_detail(
        self, pubid: str, *, missing_ok: bool = False, extra: Check | None = None, **expected: Any
    ) -> None:
        """GET /users/{pubid}?incl_items=true, checked as `expected` says (and by `extra`);
        with `missing_ok`, a 404 that says so is right too."""

        def check(body: Any) -> str | None:
            problem = checks.user_detail_problem(body, pubid=pubid, **expected)
            return problem or (extra(body) if extra else None)

        expect = {200: check, 404: not_found} if missing_ok else {200: check}
        self.call("GET", f"/users/{pubid}?incl_items=true", expect)

    def set_fullname(self, account: Account, fullname: str) -> Any:
        """The updated user, or None."""
        check = partial(
            checks.user_problem, pubid=account.pubid, name=account.name, fullname=fullname
        )
        json = {"fullname": fullname}
        return self.call("PUT", f"/users/{account.pubid}", {200: check}, account=account, json=json)

    # -- items ----------------------------------------------------------------------------
    def list_items(self, account: Account, *, limit: int = 500, count: int | None = None) -> bool:
        """GET /items: exactly the items this client knows it owns; with `count`, that many,
        which it then learns."""
        expected = account.items.keys() if count is None else None
        check = partial(
            checks.items_page_problem, owner=account.pubid, expected=expected, count=count
        )
        body = self.call("GET", f"/items?limit={limit}", {200: check}, account=account)
        if body is not None and count is not None:
            account.items = {item["pubid"]: item["name"] for item in body["items"]}
        return body is not None

    def create_item(self, account: Account, name: str) -> bool:
        check = partial(checks.item_problem, name=name, owner=account.pubid)
        json = {"name": name, "user_pubid": account.pubid}
        body = self.call("POST", "/items", {201: check}, account=account, json=json)
        if body is None:
            return False
        account.items[body["pubid"]] = name
        STATE.record(ITEM_CREATED, pubid=body["pubid"], owner=account.pubid)
        return True

    def read_item(self, account: Account, pubid: str, **expected: Any) -> None:
        check = partial(checks.item_problem, pubid=pubid, owner=account.pubid, **expected)
        self.call("GET", f"/items/{pubid}", {200: check}, account=account)

    def set_item_added(self, account: Account, pubid: str, added: datetime) -> Any:
        """The updated item, or None."""
        check = partial(checks.item_problem, pubid=pubid, owner=account.pubid, added=added)
        json = {"added": added.isoformat()}
        return self.call("PUT", f"/items/{pubid}", {200: check}, account=account, json=json)

    def delete_item(self, account: Account, pubid: str) -> bool:
        if self.call("DELETE", f"/items/{pubid}", {204: None}, account=account) is None:
            return False
        account.items.pop(pubid, None)
        STATE.record(ITEM_DELETED, pubid=pubid, owner=account.pubid)
        return True

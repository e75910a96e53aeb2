"""The base user: checked requests named by route template, accounts, and the process state
(ledger, registry) that scenarios share."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import urlencode

from locust import FastHttpUser

from loadtests import checks
from tooling.ledger import LedgerWriter

PASSWORD = "loadtest-pass-42"
TOKEN_REFRESH_AFTER_SECONDS = 300.0
Check = Callable[[Any], str | None]


@dataclass
class Account:
    name: str
    password: str
    pubid: str = ""
    access_token: str = ""
    refresh_token: str = ""
    issued_at: float = 0.0
    items: dict[str, str] = field(default_factory=dict)  # pubid -> name, as this client knows
    item_names: list[str] = field(default_factory=list)  # created with the user

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@dataclass
class ProcessState:
    """One per Locust process; gevent runs every user of the process on one thread."""

    ledger: LedgerWriter | None = None
    requests: Counter[str] = field(default_factory=Counter)
    worker_pids: Counter[str] = field(default_factory=Counter)
    throttled_logins: int = 0  # 429 answers to POST /auth/token
    # create-while-polling: users whose creation (and item count) was acknowledged
    visible: dict[str, tuple[str, int]] = field(default_factory=dict)


STATE = ProcessState()


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:20]}"[:30]


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any


class ApiUser(FastHttpUser):
    """Every request goes through `call`: named by route template (so Locust's counts line
    up with the server's /metrics), checked for status and content, and failed with the
    reason otherwise."""

    abstract = True
    scenario: ClassVar[str] = ""
    weight_factor: ClassVar[int] = 1
    network_timeout = 30.0
    connection_timeout = 10.0

    def context(self) -> dict[str, Any]:
        return {"scenario": self.scenario}

    def call(
        self,
        method: str,
        path: str,
        *,
        name: str,
        expect: tuple[int, ...] = (200,),
        check: Check | None = None,
        json: Any = None,
        form: dict[str, str] | None = None,
        account: Account | None = None,
        close: bool = False,
        headers: dict[str, str] | None = None,
    ) -> Reply | None:
        headers = {**(headers or {}), **({"Connection": "close"} if close else {})}
        data: str | None = None
        if account is not None:
            headers.update(self.fresh_headers(account))
        if form is not None:
            data = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        with self.client.request(
            method, path, name=name, data=data, json=json, headers=headers, catch_response=True
        ) as response:
            status = int(response.status_code or 0)
            if status not in expect:
                text = (response.text or "")[:200] if status else str(response.error)
                response.failure(f"HTTP {status}, expected {'/'.join(map(str, expect))}: {text}")
                return None
            body: Any = None
            if status != 204:
                try:
                    body = response.json()
                except ValueError:
                    response.failure(f"HTTP {status} with a body that is not JSON")
                    return None
            try:
                problem = check(body) if check is not None else None
            except Exception as exc:  # a check must never escape the with-block unreported
                problem = f"check raised {exc!r}"
            if problem:
                response.failure(problem)
                return None
            response.success()
            return Reply(status, body)

    # -- accounts -------------------------------------------------------------------------
    def signup(self, prefix: str, *, items: int = 0, fullname: str | None = None) -> Account | None:
        account = Account(unique_name(prefix), PASSWORD)
        account.item_names = [f"item-{n}" for n in range(items)]
        payload: dict[str, Any] = {"name": account.name, "password": account.password}
        if fullname is not None:
            payload["fullname"] = fullname
        if items:
            payload["initial_items"] = account.item_names
        reply = self.call(
            "POST",
            "/users",
            name="/users",
            expect=(201,),
            json=payload,
            check=lambda body: checks.user_problem(body, name=account.name, fullname=fullname),
        )
        if reply is None:
            return None
        account.pubid = reply.body["pubid"]
        if STATE.ledger is not None:
            STATE.ledger.user_created(account.pubid, items=items)
        return account

    def login(self, account: Account) -> bool:
        reply = self.call(
            "POST",
            "/auth/token",
            name="/auth/token",
            form={"username": account.name, "password": account.password},
            check=checks.tokens_problem,
        )
        if reply is None:
            return False
        self._store_tokens(account, reply.body)
        return True

    def refresh(self, account: Account) -> bool:
        reply = self.call(
            "POST",
            "/auth/refresh",
            name="/auth/refresh",
            form={"refresh_token": account.refresh_token},
            check=checks.tokens_problem,
        )
        if reply is None:
            return False
        self._store_tokens(account, reply.body)
        return True

    def fresh_headers(self, account: Account) -> dict[str, str]:
        if time.monotonic() - account.issued_at > TOKEN_REFRESH_AFTER_SECONDS:
            self.refresh(account)
        return account.headers

    @staticmethod
    def _store_tokens(account: Account, body: dict[str, Any]) -> None:
        account.access_token = body["access_token"]
        account.refresh_token = body["refresh_token"]
        account.issued_at = time.monotonic()

    def learn_items(self, account: Account, *, exactly: int | None = None) -> bool:
        """GET /items: fills account.items; with `exactly`, the count must match."""
        reply = self.call(
            "GET",
            "/items?limit=500",
            name="/items",
            account=account,
            check=lambda body: (
                checks.items_page_problem(body, owner=account.pubid)
                or (
                    f"items: {len(body['items'])} listed, expected {exactly}"
                    if exactly is not None and len(body["items"]) != exactly
                    else None
                )
            ),
        )
        if reply is None:
            return False
        account.items = {item["pubid"]: item["name"] for item in reply.body["items"]}
        return True

    def create_item(self, account: Account, name: str) -> str | None:
        reply = self.call(
            "POST",
            "/items",
            name="/items",
            expect=(201,),
            account=account,
            json={"name": name, "user_pubid": account.pubid},
            check=lambda body: checks.item_problem(body, name=name, owner=account.pubid),
        )
        if reply is None:
            return None
        pubid: str = reply.body["pubid"]
        account.items[pubid] = name
        if STATE.ledger is not None:
            STATE.ledger.item_created(pubid, owner=account.pubid)
        return pubid

    def check_own_items(self, account: Account, *, limit: int = 500) -> Reply | None:
        """GET /items: exactly the items this client knows it owns."""
        return self.call(
            "GET",
            f"/items?limit={limit}",
            name="/items",
            account=account,
            check=lambda body: checks.items_page_problem(
                body, owner=account.pubid, expected=account.items.keys()
            ),
        )

    def read_item(
        self,
        account: Account,
        pubid: str,
        *,
        name: str | None = None,
        added: datetime | None = None,
    ) -> Reply | None:
        return self.call(
            "GET",
            f"/items/{pubid}",
            name="/items/{pubid}",
            account=account,
            check=lambda body: checks.item_problem(
                body, pubid=pubid, name=name, owner=account.pubid, added=added
            ),
        )

    def set_item_added(self, account: Account, pubid: str, added: datetime) -> Reply | None:
        return self.call(
            "PUT",
            f"/items/{pubid}",
            name="/items/{pubid}",
            account=account,
            json={"added": added.isoformat()},
            check=lambda body: checks.item_problem(
                body, pubid=pubid, owner=account.pubid, added=added
            ),
        )

    def delete_item(self, account: Account, pubid: str) -> bool:
        reply = self.call(
            "DELETE", f"/items/{pubid}", name="/items/{pubid}", expect=(204,), account=account
        )
        if reply is None:
            return False
        account.items.pop(pubid, None)
        if STATE.ledger is not None:
            STATE.ledger.item_deleted(pubid, owner=account.pubid)
        return True

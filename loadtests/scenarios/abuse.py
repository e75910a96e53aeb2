"""Login abuse: each user guesses one victim's password from one address of its own, fast.
The first LOGIN_FAILURES_PER_USER_ADDRESS (10) guesses per window are evaluated (401), then
every guess is refused before any bcrypt work (429, expected). Meanwhile the victim logs in
from another address and must get in: one attacking address cannot lock the user out.
The proof reconciles Locust's 429s with the server's auth_logins_throttled_total."""

from __future__ import annotations

import random

from locust import between, tag, task

from loadtests import checks
from loadtests.scenarios.base import Account, ApiUser


class LoginAbuse(ApiUser):
    scenario = "abuse"
    weight = 1
    wait_time = between(0.0, 0.1)

    victim: Account | None = None
    attacker_address: str = ""
    victim_address: str = ""

    def on_start(self) -> None:
        self.victim = self.signup("v")
        # Benchmarking-range addresses (RFC 2544), sent as X-Forwarded-For: the service
        # trusts that header from loopback (FORWARDED_ALLOW_IPS), so each is its own client.
        self.attacker_address = f"198.18.{random.randrange(256)}.{random.randrange(1, 255)}"
        self.victim_address = f"198.19.{random.randrange(256)}.{random.randrange(1, 255)}"

    @tag("abuse")
    @task(8)
    def guess(self) -> None:
        if self.victim is None:
            return
        self.call(
            "POST",
            "/auth/token",
            name="/auth/token",
            expect=(401, 429),
            form={"username": self.victim.name, "password": f"guess-{random.randrange(10**6)}"},
            headers={"X-Forwarded-For": self.attacker_address},
            check=lambda body: (
                checks.detail_problem(body, contains="incorrect")
                and checks.detail_problem(body, contains="too many")
            ),
        )

    @tag("abuse")
    @task(1)
    def victim_logs_in(self) -> None:
        if self.victim is None:
            return
        self.call(
            "POST",
            "/auth/token",
            name="/auth/token",
            form={"username": self.victim.name, "password": self.victim.password},
            headers={"X-Forwarded-For": self.victim_address},
            check=checks.tokens_problem,
        )

"""Sessions that end: logout, refresh rotation with reuse detection, password change and
cleanup. Each test runs in-process and against a real 4-worker gunicorn."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx
from fastapi import FastAPI

from service.app import create_app
from service.auth.cleanup import clean_once
from service.core.db import Database
from tests.conftest import make_settings
from tests.support.api import Account, room_in_window, signup, unique_name
from tooling.database import fetch
from tooling.metrics import metric_sum

NEW_PASSWORD = "battery-staple-77"


async def _login(client: httpx.AsyncClient, account: Account, password: str) -> dict[str, str]:
    response = await client.post(
        "/auth/token", data={"username": account.name, "password": password}
    )
    assert response.status_code == 200, response.text
    pair: dict[str, str] = response.json()
    return pair


async def _ended(client: httpx.AsyncClient, reason: str) -> float:
    exposition = (await client.get("/metrics")).text
    return metric_sum(exposition, "auth_sessions_ended_total", reason=reason)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _in_process(client: httpx.AsyncClient) -> bool:
    return client.base_url.host == "test"


async def _statuses(
    client: httpx.AsyncClient, token: str, *, workers: int = 4, within: float = 15.0
) -> Counter[tuple[int, str]]:
    """GET /items with `token` in concurrent batches on fresh connections until every one
    of gunicorn's `workers` has answered (or once, in-process): (status, worker) counts."""
    seen: Counter[tuple[int, str]] = Counter()
    deadline = time.monotonic() + within
    wanted = 1 if _in_process(client) else workers
    while len({worker for _, worker in seen}) < wanted:
        assert time.monotonic() < deadline, f"not every worker answered within {within}s: {seen}"
        answers = await asyncio.gather(
            *(
                client.get("/items", headers={**_bearer(token), "Connection": "close"})
                for _ in range(8)
            )
        )
        for answer in answers:
            seen[(answer.status_code, answer.headers.get("x-worker-id", "?"))] += 1
    return seen


async def test_logout_ends_that_session_everywhere_and_only_that_one(
    client: httpx.AsyncClient,
) -> None:
    account = await signup(client)
    other = await _login(client, account, account.password)
    before = await _statuses(client, account.access_token)
    assert {status for status, _ in before} == {200}, before

    ended_before = await _ended(client, "logout")
    logout = await client.post("/auth/logout", headers=account.auth)
    assert logout.status_code == 204, logout.text
    assert await _ended(client, "logout") == ended_before + 1

    after = await _statuses(client, account.access_token)  # every worker refuses it
    assert {status for status, _ in after} == {401}, after
    refresh = await client.post("/auth/refresh", data={"refresh_token": account.refresh_token})
    assert refresh.status_code == 401
    again = await client.post("/auth/logout", headers=account.auth)
    assert again.status_code == 401
    # The user's other session is untouched.
    assert {s for s, _ in await _statuses(client, other["access_token"])} == {200}
    still = await client.post("/auth/refresh", data={"refresh_token": other["refresh_token"]})
    assert still.status_code == 200


async def test_refresh_rotates_and_a_reused_refresh_token_ends_the_session(
    client: httpx.AsyncClient,
) -> None:
    account = await signup(client)
    other = await _login(client, account, account.password)
    first = await client.post("/auth/refresh", data={"refresh_token": account.refresh_token})
    assert first.status_code == 200
    rotated = first.json()
    assert rotated["refresh_token"] != account.refresh_token
    second = await client.post("/auth/refresh", data={"refresh_token": rotated["refresh_token"]})
    assert second.status_code == 200
    victim = second.json()
    assert (await client.get("/items", headers=_bearer(victim["access_token"]))).status_code == 200

    # A thief replays the first refresh token: refused, and the whole session ends.
    ended_before = await _ended(client, "refresh_reuse")
    replay = await client.post("/auth/refresh", data={"refresh_token": account.refresh_token})
    assert replay.status_code == 401
    assert await _ended(client, "refresh_reuse") == ended_before + 1
    assert (await client.get("/items", headers=_bearer(victim["access_token"]))).status_code == 401
    latest = await client.post("/auth/refresh", data={"refresh_token": victim["refresh_token"]})
    assert latest.status_code == 401
    # Another session of the same user goes on.
    assert (await client.get("/items", headers=_bearer(other["access_token"]))).status_code == 200


async def test_concurrent_refreshes_with_one_token_rotate_once(client: httpx.AsyncClient) -> None:
    """Two uses of one refresh token at once: exactly one rotates, and the second counts as
    reuse, so the session ends (a legitimate client never sends one token twice)."""
    account = await signup(client)
    answers = await asyncio.gather(
        *(
            client.post("/auth/refresh", data={"refresh_token": account.refresh_token})
            for _ in range(4)
        )
    )
    assert sorted(answer.status_code for answer in answers) == [200, 401, 401, 401]
    winner = next(answer.json() for answer in answers if answer.status_code == 200)
    assert (await client.get("/items", headers=_bearer(winner["access_token"]))).status_code == 401


async def test_an_empty_or_missing_refresh_token_is_unauthorized(
    client: httpx.AsyncClient,
) -> None:
    for data in ({"refresh_token": ""}, {}):
        response = await client.post("/auth/refresh", data=data)
        assert response.status_code == 401, (data, response.text)
        assert response.json() == {"detail": "Invalid or expired refresh token"}


async def test_password_change_is_own_only_counts_failures_and_ends_every_session(
    client: httpx.AsyncClient, database_url: str
) -> None:
    await room_in_window()  # it counts a failure in the current window
    account = await signup(client)
    stranger = await signup(client)
    second = await _login(client, account, account.password)
    change = {"current_password": account.password, "new_password": NEW_PASSWORD}

    forbidden = await client.put(
        f"/users/{account.pubid}/password", json=change, headers=stranger.auth
    )
    assert forbidden.status_code == 403
    anonymous = await client.put(f"/users/{account.pubid}/password", json=change)
    assert anonymous.status_code == 401

    wrong = await client.put(
        f"/users/{account.pubid}/password",
        json={**change, "current_password": "not-my-password-1"},
        headers=account.auth,
    )
    assert wrong.status_code == 403
    assert wrong.json() == {"detail": "Current password is incorrect"}
    failures = await fetch(
        database_url,
        "SELECT failures FROM login_failures WHERE scope = 'user' AND key = $1",
        account.name,
    )
    assert [row["failures"] for row in failures] == [1]  # the wrong attempt counted
    weak = await client.put(
        f"/users/{account.pubid}/password",
        json={**change, "new_password": "short"},
        headers=account.auth,
    )
    assert weak.status_code == 422

    ended_before = await _ended(client, "password_change")
    done = await client.put(f"/users/{account.pubid}/password", json=change, headers=account.auth)
    assert done.status_code == 204, done.text
    assert await _ended(client, "password_change") == ended_before + 2  # both sessions
    for token in (account.access_token, second["access_token"]):
        assert (await client.get("/items", headers=_bearer(token))).status_code == 401
    for token in (account.refresh_token, second["refresh_token"]):
        refreshed = await client.post("/auth/refresh", data={"refresh_token": token})
        assert refreshed.status_code == 401
    old = await client.post(
        "/auth/token", data={"username": account.name, "password": account.password}
    )
    assert old.status_code == 401
    fresh = await _login(client, account, NEW_PASSWORD)
    assert (await client.get("/items", headers=_bearer(fresh["access_token"]))).status_code == 200
    # The stranger's session was never touched.
    assert (await client.get("/items", headers=stranger.auth)).status_code == 200
    rows = await fetch(
        database_url,
        "SELECT end_reason, count(*) AS n FROM auth_sessions s JOIN users u ON u.id = s.user_id "
        "WHERE u.name = $1 GROUP BY end_reason ORDER BY end_reason NULLS LAST",
        account.name,
    )
    assert [(row["end_reason"], row["n"]) for row in rows] == [("password_change", 2), (None, 1)]


async def _age(database_url: str, name: str, assignment: str) -> None:
    """Move a user's sessions back in time (assignment is test code, never input)."""
    await fetch(
        database_url,
        f"UPDATE auth_sessions SET {assignment} "
        "WHERE user_id = (SELECT id FROM users WHERE name = $1)",
        name,
    )


async def test_cleanup_deletes_ended_and_expired_sessions_only(
    app: FastAPI, client: httpx.AsyncClient, database_url: str
) -> None:
    ended = await signup(client)
    assert (await client.post("/auth/logout", headers=ended.auth)).status_code == 204
    just_ended = await signup(client)
    assert (await client.post("/auth/logout", headers=just_ended.auth)).status_code == 204
    expired = await signup(client)
    live = await signup(client)
    await _age(database_url, ended.name, "ended_at = now() - interval '61 minutes'")
    await _age(database_url, expired.name, "expires_at = now() - interval '1 second'")
    old_key, current_key = unique_name("old"), unique_name("current")
    await fetch(
        database_url,
        "INSERT INTO login_failures (scope, key, window_start, failures) VALUES "
        "('user', $1, now() - interval '16 minutes', 3), ('user', $2, now(), 3)",
        old_key,
        current_key,
    )
    database: Database = app.state.database
    deleted_sessions, deleted_counters = await clean_once(database, batch=1, window_seconds=900)
    assert deleted_sessions >= 2  # one batch of one at a time, until none are left
    assert deleted_counters >= 1
    counters = await fetch(
        database_url,
        "SELECT key FROM login_failures WHERE key = ANY($1::text[])",
        [old_key, current_key],
    )
    assert [row["key"] for row in counters] == [current_key]  # only the finished window went
    left = await fetch(
        database_url,
        "SELECT u.name FROM auth_sessions s JOIN users u ON u.id = s.user_id "
        "WHERE u.name = ANY($1::text[])",
        [ended.name, just_ended.name, expired.name, live.name],
    )
    # Kept: the live session, and the one ended a moment ago (kept an hour for inspection).
    assert sorted(row["name"] for row in left) == sorted([just_ended.name, live.name])
    assert (await client.get("/items", headers=live.auth)).status_code == 200


async def test_each_worker_cleans_up_in_the_background(database_url: str) -> None:
    application = create_app(make_settings(database_url, session_cleanup_interval_seconds=0.05))
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            account = await signup(http)
            assert (await http.post("/auth/logout", headers=account.auth)).status_code == 204
        await _age(database_url, account.name, "ended_at = now() - interval '2 hours'")

        async def left() -> int:
            rows = await fetch(
                database_url,
                "SELECT count(*) AS n FROM auth_sessions s JOIN users u ON u.id = s.user_id "
                "WHERE u.name = $1",
                account.name,
            )
            return int(rows[0]["n"])

        deadline = time.monotonic() + 15
        while await left():
            assert time.monotonic() < deadline, "the ended session was not cleaned up in 15 s"
            await asyncio.sleep(0.1)

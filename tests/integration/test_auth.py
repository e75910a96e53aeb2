from __future__ import annotations

import json
import time
import uuid

import httpx
import jwt
import pytest

from service.core.settings import DEV_JWT_SECRET
from tests.support.api import signup, unique_name


async def test_login_issues_a_working_pair(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    response = await client.post(
        "/auth/token", data={"username": account.name, "password": account.password}
    )
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "bearer"
    me = await client.get("/items", headers={"Authorization": f"Bearer {body['access_token']}"})
    assert me.status_code == 200


async def test_unknown_user_and_wrong_password_look_the_same(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    wrong_password = await client.post(
        "/auth/token", data={"username": account.name, "password": "wrong-password-1"}
    )
    unknown_user = await client.post(
        "/auth/token", data={"username": unique_name(), "password": "wrong-password-1"}
    )
    assert wrong_password.status_code == unknown_user.status_code == 401
    assert (
        wrong_password.json() == unknown_user.json() == {"detail": "Incorrect username or password"}
    )
    assert wrong_password.headers["www-authenticate"] == unknown_user.headers["www-authenticate"]


async def test_refresh_gives_a_new_pair(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    refreshed = await client.post("/auth/refresh", data={"refresh_token": account.refresh_token})
    assert refreshed.status_code == 200
    pair = refreshed.json()
    ok = await client.get("/items", headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert ok.status_code == 200


async def test_token_types_are_not_interchangeable(client: httpx.AsyncClient) -> None:
    account = await signup(client)
    as_access = await client.get(
        "/items", headers={"Authorization": f"Bearer {account.refresh_token}"}
    )
    assert as_access.status_code == 401
    as_refresh = await client.post("/auth/refresh", data={"refresh_token": account.access_token})
    assert as_refresh.status_code == 401


def _claims(sub: str | None, sid: str = "", **overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": sub,
        "sid": sid,
        "type": "access",
        "aud": "service-api",
        "iss": "service",
        "iat": now,
        "nbf": now,
        "exp": now + 60,
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


def _unsigned(claims: dict[str, object]) -> str:
    header = jwt.utils.base64url_encode(b'{"alg":"none","typ":"JWT"}').decode()
    body = jwt.utils.base64url_encode(json.dumps(claims).encode()).decode()
    return f"{header}.{body}."


# Forging HS512 with a 38-byte key makes PyJWT warn on the attacker's side; that is the point.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda sub, sid: _unsigned(_claims(sub, sid)), id="alg-none"),
        pytest.param(
            lambda sub, sid: jwt.encode(_claims(sub, sid), "not-the-key-" * 4, "HS256"),
            id="wrong-key",
        ),
        pytest.param(
            lambda sub, sid: jwt.encode(_claims(sub, sid), DEV_JWT_SECRET, "HS512"), id="wrong-alg"
        ),
        pytest.param(
            lambda sub, sid: jwt.encode(
                _claims(sub, sid, exp=int(time.time()) - 5), DEV_JWT_SECRET
            ),
            id="expired",
        ),
        pytest.param(
            lambda sub, sid: jwt.encode(
                _claims(sub, sid, nbf=int(time.time()) + 600), DEV_JWT_SECRET
            ),
            id="not-yet-valid",
        ),
        pytest.param(
            lambda sub, sid: jwt.encode(_claims(sub, sid, aud="another-api"), DEV_JWT_SECRET),
            id="wrong-audience",
        ),
        pytest.param(
            lambda sub, sid: jwt.encode(_claims(sub, sid, iss="someone-else"), DEV_JWT_SECRET),
            id="wrong-issuer",
        ),
        pytest.param(
            lambda sub, sid: jwt.encode(_claims(None, sid), DEV_JWT_SECRET), id="missing-sub"
        ),
        pytest.param(
            lambda sub, sid: jwt.encode(_claims(str(uuid.uuid4()), sid), DEV_JWT_SECRET),
            id="unknown-sub",
        ),
        pytest.param(
            lambda sub, sid: jwt.encode(_claims(sub, sid, type="refresh"), DEV_JWT_SECRET),
            id="refresh-as-access",
        ),
        pytest.param(
            lambda sub, sid: jwt.encode(_claims(sub, str(uuid.uuid4())), DEV_JWT_SECRET),
            id="unknown-session",
        ),
        pytest.param(
            lambda sub, sid: jwt.encode(_claims(sub, ""), DEV_JWT_SECRET), id="no-session"
        ),
        pytest.param(lambda sub, sid: "garbage", id="garbage"),
    ],
)
async def test_forged_tokens_are_rejected(client: httpx.AsyncClient, forge: object) -> None:
    account = await signup(client)
    assert callable(forge)
    sid = jwt.decode(account.access_token, options={"verify_signature": False})["sid"]
    # Control: the same claims, correctly signed, are accepted.
    genuine = jwt.encode(_claims(account.pubid, sid), DEV_JWT_SECRET, "HS256")
    ok = await client.get("/items", headers={"Authorization": f"Bearer {genuine}"})
    assert ok.status_code == 200
    response = await client.get(
        "/items", headers={"Authorization": f"Bearer {forge(account.pubid, sid)}"}
    )
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid or expired token"

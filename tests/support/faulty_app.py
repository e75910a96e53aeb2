"""The real app plus routes that misbehave on purpose, for lifecycle and security tests.

Started through gunicorn.conf.py with APP_MODULE=tests.support.faulty_app:create_app()."""

from __future__ import annotations

import time

from fastapi import FastAPI

from service.app import create_app as create_service_app


def create_app() -> FastAPI:
    app = create_service_app()

    @app.get("/_test/block")
    async def block(seconds: float) -> dict[str, float]:
        time.sleep(seconds)  # noqa: ASYNC251 - blocking the loop is the point of this route
        return {"slept": seconds}

    @app.get("/_test/crash")
    async def crash() -> None:
        raise RuntimeError("secret internal detail: /etc/service/config")

    return app

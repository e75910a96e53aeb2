"""The real app plus one route that blocks its worker's event loop, for the TIMEOUT test.

Started through gunicorn.conf.py with APP_MODULE=tests.support.blocking_app:create_app()."""

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

    return app

"""Composition root. `create_app()` reads settings; the lifespan builds the engine, so each
gunicorn worker owns a pool created after the fork (preload or not)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response

from service.auth.cleanup import clean_forever
from service.auth.router import router as auth_router
from service.auth.throttle import ThrottleLimits
from service.core import metrics
from service.core.db import Database
from service.core.errors import install_error_handlers
from service.core.middleware import BodySizeLimit, RequestObservation
from service.core.security import PasswordHasher, TokenService
from service.core.settings import Settings, load_settings
from service.health.router import router as health_router
from service.items.router import router as items_router
from service.users.router import router as users_router

logger = logging.getLogger("service.app")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # No connection is opened here: a worker must boot even while the database is down
        # (a failed boot stops the whole gunicorn master). /readyz reports the database.
        database = Database.create(settings)
        metrics.instrument_engine(database.engine, pool_size=settings.db_pool_size)
        metrics.record_worker_start()
        app.state.settings = settings
        app.state.database = database
        app.state.tokens = TokenService.from_settings(settings)
        app.state.hasher = hasher = await PasswordHasher.create(settings)
        app.state.throttle_limits = ThrottleLimits.from_settings(settings)
        cleanup = asyncio.create_task(clean_forever(database, settings), name="auth-cleanup")
        try:
            yield
        finally:
            cleanup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await cleanup
            hasher.close()
            await database.dispose()

    app = FastAPI(
        title="service",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs" if settings.serve_docs else None,
        redoc_url="/redoc" if settings.serve_docs else None,
        openapi_url="/openapi.json" if settings.serve_docs else None,
    )
    install_error_handlers(app, retry_after_seconds=settings.retry_after_seconds)
    app.include_router(health_router)
    app.include_router(auth_router)
    app.include_router(users_router)
    app.include_router(items_router)
    if settings.metrics_enabled and settings.metrics_endpoint:

        @app.get("/metrics", include_in_schema=False)
        async def prometheus_metrics() -> Response:
            payload, content_type = await asyncio.to_thread(metrics.render_latest)
            return Response(payload, media_type=content_type)

    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        RequestObservation,
        retry_after_seconds=settings.retry_after_seconds,
        worker_header=settings.worker_id_header,
        metrics_enabled=settings.metrics_enabled,
        access_log=settings.access_log,
    )
    return app

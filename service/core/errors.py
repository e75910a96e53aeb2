"""Every error path answers JSON `{"detail": ...}`; database trouble answers 503 quickly."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from service.core import sqlstates
from service.core.db import RetriesExhaustedError, sqlstate_of
from service.core.metrics import DB_ERRORS

logger = logging.getLogger("service.errors")


FASTAPI_BODY_PARSE_ERROR = "There was an error parsing the body"


def allowed_methods(request: Request) -> list[str]:
    """Starlette's 405 names one route's methods; FastAPI has one route per method."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


class ServiceUnavailableError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_database_unavailable(exc: BaseException) -> bool:
    if isinstance(exc, PoolTimeoutError | RetriesExhaustedError | OperationalError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated or isinstance(exc, InterfaceError):
            return True
        state = sqlstate_of(exc) or ""
        return state == sqlstates.QUERY_CANCELED or state.startswith(sqlstates.UNAVAILABLE_PREFIXES)
    # asyncpg raises these directly while connecting (refused, timed out, reset).
    return isinstance(exc, OSError | TimeoutError)


def unavailable_reason(exc: BaseException) -> str:
    if isinstance(exc, PoolTimeoutError):
        return "pool_timeout"
    if isinstance(exc, RetriesExhaustedError):
        return "retries_exhausted"
    if isinstance(exc, DBAPIError) and sqlstate_of(exc) == sqlstates.QUERY_CANCELED:
        return "statement_timeout"
    if isinstance(exc, TimeoutError):
        return "timeout"  # asyncpg's connect or command timeout
    return "disconnect"


def unavailable(reason: str, *, retry_after_seconds: int) -> JSONResponse:
    return JSONResponse(
        {"detail": "Service temporarily unavailable, retry later", "reason": reason},
        status_code=503,
        headers={"Retry-After": str(retry_after_seconds)},
    )


def unexpected_error_response(
    exc: Exception, *, method: str, path: str, retry_after_seconds: int
) -> JSONResponse:
    """The one answer to an exception no handler claimed: 503 when the database is
    unavailable (counted by kind), else 500 with the traceback in the log, never the body."""
    if is_database_unavailable(exc):
        reason = unavailable_reason(exc)
        DB_ERRORS.labels(kind=reason).inc()
        logger.warning("database unavailable (%s): %s", reason, type(exc).__name__)
        return unavailable(reason, retry_after_seconds=retry_after_seconds)
    logger.error("unhandled error on %s %s", method, path, exc_info=exc)
    return JSONResponse({"detail": "Internal server error"}, status_code=500)


def install_error_handlers(app: FastAPI, *, retry_after_seconds: int) -> None:
    """Errors with an answer of their own. Anything else reaches RequestObservation, the
    outermost middleware, which answers it with `unexpected_error_response`."""

    async def on_http_exception(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400 and exc.detail == FASTAPI_BODY_PARSE_ERROR:
            # A body that is not even text (bad UTF-8): malformed input like bad JSON, so 422.
            errors = [{"type": "body_invalid", "loc": ["body"], "msg": "Body cannot be decoded"}]
            return JSONResponse({"detail": errors}, status_code=422)
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": ", ".join(allowed_methods(request))}
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)

    async def on_service_unavailable(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ServiceUnavailableError)
        return unavailable(exc.reason, retry_after_seconds=retry_after_seconds)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {key: value for key, value in err.items() if key in {"type", "loc", "msg"}}
            for err in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    app.add_exception_handler(StarletteHTTPException, on_http_exception)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(ServiceUnavailableError, on_service_unavailable)

"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task per request)."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core import metrics
from service.core.errors import unexpected_error_response

access_logger = logging.getLogger("service.access")

_REQUEST_ID_MAX = 128
_NOSNIFF = (b"x-content-type-options", b"nosniff")


class BodyTooLargeError(HTTPException):
    """An HTTPException, so FastAPI's body parsing passes it through as a 413."""

    def __init__(self) -> None:
        super().__init__(413, "Request body too large")


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def _send_json(send: Send, status: int, body: dict[str, str]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class _Series:
    """This process's metric children, bound to their labels once: `.labels()` costs a
    lookup under a lock on every call, which a request should not pay for each series."""

    def __init__(self) -> None:
        # Read at the first request, in the worker: the slot is set after the fork.
        self.slot = metrics.worker_slot()
        self.in_progress = metrics.HTTP_IN_PROGRESS.labels(worker=self.slot)
        self.worker_requests = metrics.WORKER_REQUESTS.labels(worker=self.slot)
        self._requests: dict[tuple[str, str, int], Any] = {}
        self._latency: dict[tuple[str, str], Any] = {}

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        requests = self._requests.get((method, route, status))
        if requests is None:
            requests = metrics.HTTP_REQUESTS.labels(method, route, str(status))
            self._requests[method, route, status] = requests
        latency = self._latency.get((method, route))
        if latency is None:
            latency = metrics.HTTP_LATENCY.labels(method, route)
            self._latency[method, route] = latency
        requests.inc()
        latency.observe(seconds)
        self.worker_requests.inc()


@dataclass(slots=True)
class RequestObservation:
    """Request id, worker header, security headers, metrics, one JSON access-log line, and
    the answer to any exception no handler claimed (the outermost middleware)."""

    app: ASGIApp
    retry_after_seconds: int
    worker_header: bool
    metrics_enabled: bool
    access_log: bool
    pid: int = field(default_factory=os.getpid)
    _series: _Series | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        series = self._series
        if series is None:  # first request: Starlette builds middleware in the worker
            series = self._series = _Series()
        incoming_id = _header(scope, b"x-request-id")
        request_id = incoming_id[:_REQUEST_ID_MAX] if incoming_id else os.urandom(16).hex().encode()
        extra_headers = [(b"x-request-id", request_id), _NOSNIFF]
        if self.worker_header:
            extra_headers.append((b"x-worker-id", str(self.pid).encode()))
        status_code = 500
        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status_code, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_code = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra_headers]
            await send(message)

        if self.metrics_enabled:
            series.in_progress.inc()
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            # The one place an unclaimed exception is answered (503 or 500). Here, rather
            # than in the server: uvicorn closes a keep-alive connection whose app raised,
            # and the client's next request on it would fail. Tracebacks go to the log only.
            if response_started:
                raise
            await unexpected_error_response(
                exc,
                method=scope["method"],
                path=scope["path"],
                retry_after_seconds=self.retry_after_seconds,
            )(scope, receive, send_with_headers)
        finally:
            duration = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            method = scope["method"]
            if self.metrics_enabled:
                series.in_progress.dec()
                series.record(method, template, status_code, duration)
            if self.access_log:
                access_logger.info(
                    json.dumps(
                        {
                            "pid": self.pid,
                            "worker": series.slot,
                            "request_id": request_id.decode("latin-1"),
                            "method": method,
                            "route": template,
                            "status": status_code,
                            "duration_ms": round(duration * 1000, 2),
                        }
                    )
                )


@dataclass(slots=True)
class BodySizeLimit:
    """413 for bodies over the limit, whether announced by Content-Length or streamed."""

    app: ASGIApp
    max_bytes: int

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > self.max_bytes
            except ValueError:
                await _send_json(send, 400, {"detail": "Invalid Content-Length header"})
                return
            if too_large:
                await _send_json(send, 413, {"detail": "Request body too large"})
                return

        received = 0
        response_started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLargeError:
            if response_started:
                raise
            await _send_json(send, 413, {"detail": "Request body too large"})

"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task per request)."""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core import metrics

access_logger = logging.getLogger("service.access")
error_logger = logging.getLogger("service.errors")

_REQUEST_ID_MAX = 128


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


@dataclass(slots=True)
class RequestObservation:
    """Request id, worker header, security headers, metrics and one JSON access-log line."""

    app: ASGIApp
    worker_header: bool
    metrics_enabled: bool
    access_log: bool
    pid: bytes = field(default_factory=lambda: str(os.getpid()).encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming_id = _header(scope, b"x-request-id")
        request_id = incoming_id[:_REQUEST_ID_MAX] if incoming_id else uuid.uuid4().hex.encode()
        status_code = 500
        slot = metrics.worker_slot()
        in_progress = metrics.HTTP_IN_PROGRESS.labels(worker=slot)

        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status_code, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_code = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id))
                headers.append((b"x-content-type-options", b"nosniff"))
                if self.worker_header:
                    headers.append((b"x-worker-id", self.pid))
                message["headers"] = headers
            await send(message)

        if self.metrics_enabled:
            in_progress.inc()
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            # Answer here rather than let the exception reach the server: uvicorn closes a
            # keep-alive connection whose app raised, and the client's next request on it
            # would fail. The traceback goes to the log, never to the client.
            if response_started:
                raise
            error_logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
            await _send_json(send_with_headers, 500, {"detail": "Internal server error"})
        finally:
            duration = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "<unmatched>"
            method = scope["method"]
            if self.metrics_enabled:
                in_progress.dec()
                metrics.HTTP_REQUESTS.labels(method, template, str(status_code)).inc()
                metrics.HTTP_LATENCY.labels(method, template).observe(duration)
                metrics.WORKER_REQUESTS.labels(worker=slot).inc()
            if self.access_log:
                access_logger.info(
                    json.dumps(
                        {
                            "pid": os.getpid(),
                            "worker": slot,
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

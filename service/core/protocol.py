"""uvicorn's httptools protocol plus two bounds uvicorn (0.54) has no setting for.

* A deadline for a request's headers. uvicorn arms a timer only after a response (the
  keep-alive timeout) and cancels it on the next byte, so a client that connects and sends
  nothing, or one header line a second, holds its connection (a file descriptor) forever.
  Here the deadline starts when the connection opens, or at the first byte of a later
  request, and ends when the headers are complete. Past it: 408 (if a request had begun)
  and the connection is closed.
* A connection limit answered in JSON. uvicorn's `limit_concurrency` answers text/plain;
  this one answers the same way as the app's own 503s, and closes the connection.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, ClassVar

from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

HEADER_TIMEOUT_BODY = json.dumps({"detail": "Request headers not received in time"}).encode()
OVER_LIMIT_BODY = json.dumps(
    {"detail": "Too many connections to this worker, retry later", "reason": "connection_limit"}
).encode()


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout: ClassVar[float] = 10.0
    connection_limit: ClassVar[int | None] = None
    retry_after_seconds: ClassVar[int] = 1

    @classmethod
    def configured(
        cls, *, header_timeout: float, connection_limit: int | None, retry_after_seconds: int
    ) -> type[BoundedHttpToolsProtocol]:
        """A subclass carrying these values: uvicorn builds protocols from a class alone."""
        values = {
            "header_timeout": header_timeout,
            "connection_limit": connection_limit,
            "retry_after_seconds": retry_after_seconds,
        }
        return type(cls.__name__, (cls,), values)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit_concurrency = None  # the check in _start_asgi_task replaces uvicorn's
        self._header_deadline: asyncio.TimerHandle | None = None
        self._request_begun = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        if self._header_deadline is None:  # a later request on a kept-alive connection
            self._arm_header_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_header_deadline()
        self._request_begun = False
        super().on_headers_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        limit = self.connection_limit
        # `connections` includes this one; `tasks` does not yet include this request's.
        if limit is not None and (len(self.connections) > limit or len(self.tasks) >= limit):
            app = self._over_limit
        super()._start_asgi_task(cycle, app)

    def _arm_header_deadline(self) -> None:
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_late(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request is late while an earlier one is still being answered:
            # let that answer finish, then close.
            self.cycle.keep_alive = False
            return
        if self._request_begun:
            self._write_408()
        self.transport.close()

    def _write_408(self) -> None:
        head = [STATUS_LINE[408]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(HEADER_TIMEOUT_BODY),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + HEADER_TIMEOUT_BODY)

    async def _over_limit(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(OVER_LIMIT_BODY)).encode()),
                    (b"retry-after", str(self.retry_after_seconds).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": OVER_LIMIT_BODY, "more_body": False})

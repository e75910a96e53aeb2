"""The gunicorn worker class: uvicorn-worker's UvicornWorker plus what it does not pass on."""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker

from service.core.protocol import BoundedHttpToolsProtocol
from service.core.settings import load_settings


class ServiceWorker(UvicornWorker):  # type: ignore[misc]  # untyped base
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "uvloop",
        # The app writes one JSON access line per request (with route and duration).
        "access_log": False,
        # Never start serving without the lifespan (it builds this worker's engine).
        "lifespan": "on",
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn-worker passes keepalive, max_requests and timeout, but not these.
        self.config.timeout_graceful_shutdown = self.cfg.graceful_timeout
        # httptools, with a header deadline and a JSON 503 past the connection limit.
        settings = load_settings()  # validated by the master before it forked
        self.config.http = BoundedHttpToolsProtocol.configured(
            header_timeout=settings.header_timeout,
            connection_limit=settings.limit_concurrency or None,
            retry_after_seconds=settings.retry_after_seconds,
        )

    def init_signals(self) -> None:
        super().init_signals()
        # UvicornWorker resets SIGABRT to its default (a silent core dump). Gunicorn sends it
        # when a worker misses its heartbeat; handle it so the worker_abort hook can log
        # where the worker was stuck before it exits.
        signal.signal(signal.SIGABRT, self.handle_abort)

    def handle_abort(self, sig: int, frame: FrameType | None) -> None:
        """Gunicorn's version ends with sys.exit(1), raised inside whatever request blocked
        the loop: uvicorn catches that SystemExit as an app error, answers 500, and the
        timed-out worker lives on. Log the stacks through the hook, then really exit."""
        self.alive = False
        self.cfg.worker_abort(self)
        os._exit(1)

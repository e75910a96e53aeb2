"""Gunicorn configuration: `gunicorn -c gunicorn.conf.py` from the project root.

Read top to bottom: the metrics directory (before anything imports prometheus_client),
settings from the environment, then the server hooks. Helpers are imported under
_underscore names: gunicorn treats every other module global as a setting.
"""

import os as _os
import subprocess as _subprocess
import sys as _sys

from gunicorn.arbiter import Arbiter as _Arbiter
from gunicorn.workers.base import Worker as _Worker

from service.core import deployment as _deployment
from service.core.settings import ConfigurationError as _ConfigurationError
from service.core.settings import load_settings as _load_settings

_METRICS_DIR = _deployment.prepare_metrics_dir()

# --- Settings ----------------------------------------------------------------------------
# The one settings model (service/core/settings.py), validated once here: an impossible
# value stops the master with one clear line (exit 2) before anything forks.
try:
    _settings = _load_settings()
except _ConfigurationError as _exc:
    print(f"refusing to start: {_exc}", file=_sys.stderr)
    raise SystemExit(2) from None

wsgi_app = _settings.app_module
worker_class = "service.core.worker.ServiceWorker"
bind = _settings.bind.split(",")
workers = _settings.workers
timeout = _settings.timeout
graceful_timeout = _settings.graceful_timeout
keepalive = _settings.keepalive
max_requests = _settings.max_requests
max_requests_jitter = _settings.max_requests_jitter
backlog = _settings.backlog
forwarded_allow_ips = _settings.forwarded_allow_ips
preload_app = _settings.preload_app
loglevel = _settings.log_level.lower()
# Workers heartbeat through a file here: keep it on tmpfs (containers mount /dev/shm).
worker_tmp_dir = _settings.worker_tmp_dir or None
# Gunicorn >= 25 opens a control socket under ~/.gunicorn by default. Off unless asked for,
# so several instances (and read-only homes) never collide; CONTROL_SOCKET=path enables it.
control_socket = _settings.control_socket
control_socket_disable = not control_socket
# The app logs one JSON line per request itself (it knows the route and the worker slot).
accesslog = None
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(message)s"},
        "generic": {"format": "%(asctime)s [%(process)d] [%(levelname)s] %(name)s: %(message)s"},
    },
    "handlers": {
        "access": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "stream": "ext://sys.stdout",
        },
        "error": {
            "class": "logging.StreamHandler",
            "formatter": "generic",
            "stream": "ext://sys.stderr",
        },
    },
    "root": {"level": loglevel.upper(), "handlers": ["error"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["error"], "propagate": False},
        "service.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
    },
}


# --- Hooks -------------------------------------------------------------------------------
def on_starting(server: _Arbiter) -> None:
    """Master, once, before forking: refuse impossible configurations with a clear message."""
    settings = _settings
    server.log.info("metrics directory: %s", _METRICS_DIR)
    server.log.info(
        "clients: %ds to send complete request headers, %ds keep-alive idle, "
        "at most %s connections per worker",
        settings.header_timeout,
        keepalive,
        settings.limit_concurrency or "unlimited",
    )
    if settings.limit_concurrency:
        needed = (
            settings.limit_concurrency + settings.connections_per_worker + _deployment.FD_RESERVE
        )
        allowed = _deployment.raise_fd_limit(needed)
        if allowed < needed:
            server.log.warning(
                "a worker may need %d file descriptors but the limit is %d: past it, accepting "
                "fails for everyone. Raise the hard limit (ulimit -Hn) or lower LIMIT_CONCURRENCY",
                needed,
                allowed,
            )
    if max_requests_jitter and not max_requests:
        server.log.warning("MAX_REQUESTS_JITTER has no effect without MAX_REQUESTS")
    if settings.db_pgbouncer:
        # These are client connections to PgBouncer; its own pool (default_pool_size,
        # max_db_connections) bounds the connections to PostgreSQL.
        server.log.info(
            "connection budget: %d workers x %d client connections to PgBouncer = %d; "
            "PgBouncer's pool bounds the connections to PostgreSQL",
            server.cfg.workers,
            settings.connections_per_worker,
            server.cfg.workers * settings.connections_per_worker,
        )
        return
    budget = _deployment.connection_budget(settings, server.cfg.workers)
    if budget.available is None:
        server.log.warning("%s; starting anyway, /readyz reports the database", budget.describe())
    else:
        server.log.info(budget.describe())
    if not budget.fits:
        server.log.error(
            "refusing to start: %d connections needed but the database allows %d. Lower "
            "WEB_CONCURRENCY or DB_POOL_SIZE/DB_MAX_OVERFLOW, raise max_connections, or put "
            "PgBouncer in front (see README, 'Connection budget').",
            budget.needed,
            budget.available,
        )
        _sys.exit(2)


def when_ready(server: _Arbiter) -> None:
    server.log.info("listening; %d workers booting", server.cfg.workers)
    if _settings.metrics_bind:
        server.metrics_server = _subprocess.Popen(
            [_sys.executable, "-m", "service.core.metrics_server", "--bind", _settings.metrics_bind]
        )
        server.log.info(
            "aggregate metrics also served on http://%s/metrics", _settings.metrics_bind
        )


def pre_fork(server: _Arbiter, worker: _Worker) -> None:
    _deployment.assign_slot(server.WORKERS, worker)


def post_fork(server: _Arbiter, worker: _Worker) -> None:
    # Runs in the child: the slot labels this worker's metrics. The app (and its engine)
    # is created after this, so no pool ever crosses the fork, even with preload_app.
    _os.environ[_deployment.WORKER_SLOT_ENV] = str(worker.slot)


def post_worker_init(worker: _Worker) -> None:
    worker.log.info("worker %s ready in slot %s", worker.pid, worker.slot)


def worker_abort(worker: _Worker) -> None:
    worker.log.error("worker %s timed out; stacks:\n%s", worker.pid, _deployment.format_stacks())


def child_exit(server: _Arbiter, worker: _Worker) -> None:
    # Imported here, not at the top: prometheus_client must load after the directory is set.
    from service.core import metrics as _metrics
    from service.core import metrics_files as _metrics_files

    # An exception here escapes gunicorn's main loop and stops the master (no respawn, then
    # exit 255): losing one dead worker's counts is the lesser harm.
    try:
        _metrics_files.compact_dead_process(_METRICS_DIR, worker.pid)
        _metrics.WORKER_EXITS.labels(worker=str(getattr(worker, "slot", "?"))).inc()
    except Exception:
        server.log.exception("could not fold the metrics of worker %s", worker.pid)


def on_exit(server: _Arbiter) -> None:
    metrics_server = getattr(server, "metrics_server", None)
    if metrics_server is not None:
        metrics_server.terminate()
        metrics_server.wait(5)
    server.log.info("master exiting")

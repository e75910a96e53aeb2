#!/bin/sh
# Container entrypoint: start every command (gunicorn, alembic, a shell) with an empty
# Prometheus multiprocess directory, then replace this shell with it (exec), so signals
# from `docker stop` reach gunicorn's master directly.
set -eu

if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
    mkdir -p "${PROMETHEUS_MULTIPROC_DIR}"
    # Files left by an earlier run would be summed into this run's counters.
    find "${PROMETHEUS_MULTIPROC_DIR}" -mindepth 1 -delete
fi
if [ -n "${WORKER_TMP_DIR:-}" ]; then
    mkdir -p "${WORKER_TMP_DIR}"
fi

exec "$@"

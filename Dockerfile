# syntax=docker/dockerfile:1
# The service image: gunicorn -c gunicorn.conf.py with UvicornWorker processes.
#
#   docker build -t service .
#   docker run --rm -p 8000:8000 -e DATABASE_URL=... -e JWT_SECRET_KEY=... service
#   docker run --rm -e DATABASE_URL=... -e JWT_SECRET_KEY=... service alembic upgrade head
#
# Stage 1 resolves nothing: it installs exactly what uv.lock pins (runtime group only) into
# /app/.venv, and the service itself as a regular (non-editable) package. Stage 2 is the
# same slim Python with that virtualenv, the gunicorn config and the migrations; no
# compiler, no uv, no tests, and it runs as an unprivileged user with a fixed UID.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# The same uv version as ./dev.
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
# Dependencies first: this layer is rebuilt only when the lock file changes.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-project
COPY README.md ./
COPY service ./service
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-editable

FROM ${PYTHON_IMAGE} AS runtime
ARG APP_UID=10001
RUN groupadd --system --gid "${APP_UID}" app \
    && useradd --system --uid "${APP_UID}" --gid app --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin app
# PROMETHEUS_MULTIPROC_DIR and gunicorn's worker heartbeat files live on /dev/shm (tmpfs in
# every container): mmap'd metric files and heartbeats never touch the image's disk. The
# entrypoint empties the metrics directory at each start; so does gunicorn.conf.py.
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ENVIRONMENT=production \
    BIND=0.0.0.0:8000 \
    PROMETHEUS_MULTIPROC_DIR=/dev/shm/service-metrics \
    WORKER_TMP_DIR=/dev/shm
WORKDIR /app
COPY --from=builder /app/.venv /app/.venv
COPY gunicorn.conf.py alembic.ini ./
COPY migrations ./migrations
COPY --chmod=0755 deploy/docker-entrypoint.sh /usr/local/bin/docker-entrypoint
USER ${APP_UID}:${APP_UID}
EXPOSE 8000
# Liveness only (never the database): /readyz is for load balancers, not for restarts.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('BIND', '0.0.0.0:8000').split(',')[0].rsplit(':', 1)[-1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/livez', timeout=2)"]
ENTRYPOINT ["docker-entrypoint"]
CMD ["gunicorn", "-c", "gunicorn.conf.py"]

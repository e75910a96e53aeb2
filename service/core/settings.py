"""Service configuration, read from the environment once per process (never at import)."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_JWT_SECRET = "dev-only-insecure-jwt-secret-change-me"
_PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", DEV_JWT_SECRET}
MIN_PRODUCTION_SECRET_LENGTH = 32


class ConfigurationError(RuntimeError):
    """The configuration cannot work; the message says what to change."""


_CONFIG = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)


class ServerSettings(BaseSettings):
    """How gunicorn runs the workers (gunicorn.conf.py reads these) and bounds clients."""

    model_config = _CONFIG

    bind: str = Field(default="0.0.0.0:8000", description="Comma-separated listen addresses.")
    web_concurrency: int | None = Field(
        default=None, ge=1, description="Worker processes; default: the CPU count, up to 8."
    )
    timeout: int = Field(default=30, ge=1, description="Heartbeat timeout of a worker (s).")
    graceful_timeout: int = Field(default=20, ge=1)
    keepalive: int = Field(default=5, ge=1, description="Idle keep-alive connection (s).")
    max_requests: int = Field(default=0, ge=0)
    max_requests_jitter: int = Field(default=0, ge=0)
    backlog: int = Field(default=2048, ge=1)
    forwarded_allow_ips: str = "127.0.0.1"
    preload_app: bool = False
    log_level: str = "info"
    worker_tmp_dir: str = Field(default="", description="Heartbeat files; empty: system tmp.")
    control_socket: str = Field(default="", description="gunicorn's control socket; empty: off.")
    app_module: str = "service.app:create_app()"
    metrics_bind: str = Field(default="", description="host:port of the master's /metrics.")
    # Seconds a client has to deliver a request's complete headers (from connecting, or from
    # the first byte of a later request on a kept-alive connection).
    header_timeout: int = Field(default=10, ge=1)
    limit_concurrency: int = Field(
        default=1000, ge=0, description="Connections per worker before 503; 0: no limit."
    )
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    retry_after_seconds: int = Field(default=1, ge=1, le=300)


class DatabaseSettings(BaseSettings):
    model_config = _CONFIG

    database_url: str = Field(
        default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres",
        description="SQLAlchemy URL; must use the asyncpg driver.",
    )

    # Pool: fixed size, no overflow by default. Overflow connections are opened and closed
    # under load, and a fresh connection costs tens of milliseconds: that is the tail latency.
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=0, ge=0, le=200)
    db_pool_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    db_connect_timeout_seconds: float = Field(default=3.0, gt=0, le=60)
    db_statement_timeout_ms: int = Field(default=5000, ge=0, le=600_000)
    db_command_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    db_retry_attempts: int = Field(default=10, ge=1, le=30)
    db_pgbouncer: bool = Field(
        default=False, description="Connect through PgBouncer in transaction mode."
    )
    readiness_timeout_seconds: float = Field(default=2.0, gt=0, le=30)
    db_connection_reserve: int = Field(
        default=5, ge=0, description="Connections kept free for migrations and admins."
    )

    @field_validator("database_url")
    @classmethod
    def _require_asyncpg(cls, value: str) -> str:
        if not value.startswith("postgresql+asyncpg://"):
            raise ValueError("DATABASE_URL must start with postgresql+asyncpg://")
        return value

    @property
    def connections_per_worker(self) -> int:
        return self.db_pool_size + self.db_max_overflow


class AuthSettings(BaseSettings):
    model_config = _CONFIG

    jwt_secret_key: SecretStr = SecretStr(DEV_JWT_SECRET)
    jwt_audience: str = "service-api"
    jwt_issuer: str = "service"
    access_token_ttl_seconds: int = Field(default=900, ge=10, le=86_400)
    refresh_token_ttl_seconds: int = Field(default=14 * 86_400, ge=60, le=90 * 86_400)

    bcrypt_rounds: int = Field(default=12, ge=4, le=16)
    # Hash admission, per worker: bcrypt is CPU, so bound it and shed the excess fast.
    hash_concurrency: int = Field(default=1, ge=1, le=64)
    hash_queue_timeout_seconds: float = Field(default=1.0, ge=0, le=30)
    hash_thread_nice: int = Field(
        default=10, ge=0, le=19, description="Niceness added to the hashing threads (Linux)."
    )

    # Login throttling, counted in PostgreSQL (shared by every worker and instance).
    login_throttle_window_seconds: int = Field(default=900, ge=1, le=86_400)
    login_failures_per_user_address: int = Field(default=10, ge=1)
    login_failures_per_user: int = Field(default=100, ge=1)
    login_failures_per_address: int = Field(default=100, ge=1)

    # Expired and ended sessions and old throttling windows are deleted in the background.
    session_cleanup_interval_seconds: float = Field(default=300.0, gt=0, le=86_400)
    session_cleanup_batch: int = Field(default=1000, ge=1, le=100_000)


class ObservabilitySettings(BaseSettings):
    model_config = _CONFIG

    worker_id_header: bool = True
    docs_enabled: bool | None = Field(
        default=None, description="Serve /docs and /redoc; defaults to off in production."
    )
    metrics_enabled: bool = True
    metrics_endpoint: bool = Field(
        default=True, description="Serve /metrics on the app port (see METRICS_BIND)."
    )
    access_log: bool = True


class Settings(ServerSettings, DatabaseSettings, AuthSettings, ObservabilitySettings):
    """Every setting, validated once per process; one environment variable per field (the
    field's name in upper case). Grouped by what they configure, flat to read."""

    model_config = _CONFIG

    environment: Literal["development", "test", "production"] = "development"

    @model_validator(mode="after")
    def _refuse_placeholder_secret_in_production(self) -> Settings:
        secret = self.jwt_secret_key.get_secret_value()
        if self.environment == "production" and (
            secret.strip().lower() in _PLACEHOLDER_SECRETS
            or len(secret) < MIN_PRODUCTION_SECRET_LENGTH
        ):
            raise ValueError(
                "JWT_SECRET_KEY is empty, a placeholder, or shorter than "
                f"{MIN_PRODUCTION_SECRET_LENGTH} characters; production refuses to start. "
                'Generate one with: python -c "import secrets; print(secrets.token_urlsafe(48))"'
            )
        return self

    @property
    def serve_docs(self) -> bool:
        if self.docs_enabled is None:
            return self.environment != "production"
        return self.docs_enabled

    @property
    def workers(self) -> int:
        """One asyncio worker saturates one core; more only add switching and connections."""
        return self.web_concurrency or max(1, min(os.cpu_count() or 1, 8))


def load_settings() -> Settings:
    """Read settings from the environment, turning validation errors into one clear message."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper() or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigurationError(f"invalid configuration: {problems}") from None

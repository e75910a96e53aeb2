from __future__ import annotations

import subprocess
import sys

import pytest

from service.core.settings import DEV_JWT_SECRET, ConfigurationError, Settings, load_settings

URL = "postgresql+asyncpg://u@localhost/db"


@pytest.mark.parametrize("secret", ["", "changeme", DEV_JWT_SECRET, "short-but-not-placeholder"])
def test_production_refuses_weak_secrets(secret: str) -> None:
    with pytest.raises(ValueError, match="JWT_SECRET_KEY"):
        Settings(environment="production", database_url=URL, jwt_secret_key=secret)


def test_production_accepts_a_real_secret_and_hides_docs() -> None:
    settings = Settings(
        environment="production",
        database_url=URL,
        jwt_secret_key="k" * 48,
    )
    assert settings.serve_docs is False
    assert Settings(database_url=URL).serve_docs is True


def test_database_url_must_use_asyncpg() -> None:
    with pytest.raises(ValueError, match="asyncpg"):
        Settings(database_url="postgresql://u@localhost/db")


def test_load_settings_reports_env_problems_in_one_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DB_POOL_SIZE", "zero")
    monkeypatch.setenv("DATABASE_URL", "mysql://nope")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    message = str(caught.value)
    assert "DB_POOL_SIZE" in message
    assert "DATABASE_URL" in message


def test_importing_the_app_reads_nothing_and_connects_nowhere() -> None:
    """Importing must not read settings or build an engine: with a broken environment the
    import succeeds, and only create_app() complains."""
    code = (
        "import service.app, service.core.db, service.core.metrics\n"
        "from service.core.settings import ConfigurationError\n"
        "try:\n"
        "    service.app.create_app()\n"
        "except ConfigurationError as exc:\n"
        "    print('refused:', exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={"DATABASE_URL": "not-a-url", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "refused: invalid configuration: DATABASE_URL" in result.stdout

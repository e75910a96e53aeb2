"""Database URL helpers. No imports of the app here: gunicorn.conf.py loads this before
the metrics directory exists."""

from __future__ import annotations

from sqlalchemy.engine import make_url


def plain_dsn(database_url: str) -> str:
    """The libpq-style URL asyncpg itself takes (SQLAlchemy's names the driver)."""
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def with_database(url: str, database: str) -> str:
    """The same server URL, naming another database."""
    return make_url(url).set(database=database).render_as_string(hide_password=False)

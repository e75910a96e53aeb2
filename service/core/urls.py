"""Database URL helpers. No imports of the app here: gunicorn.conf.py loads this before
the metrics directory exists."""

from __future__ import annotations


def plain_dsn(database_url: str) -> str:
    """The libpq-style URL asyncpg itself takes (SQLAlchemy's names the driver)."""
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)

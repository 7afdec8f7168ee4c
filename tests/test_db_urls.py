"""One translation of the database URL, for SQLAlchemy's engine and for asyncpg alike."""

from __future__ import annotations

import pytest

from cryptocheckout.kit.db import async_url, asyncpg_connect_args


def test_asyncpg_arguments_come_from_the_engine_url() -> None:
    url = "postgresql://shop:p%40ss@db.internal:6432/cc?sslmode=require&prepared_statement_cache_size=0"
    assert asyncpg_connect_args(url) == {
        "host": "db.internal",
        "port": 6432,
        "user": "shop",
        "password": "p@ss",
        "database": "cc",
        "ssl": "require",
        "statement_cache_size": 0,
    }
    # The engine's own URL (driver already named) gives the same arguments.
    assert asyncpg_connect_args(async_url(url)) == asyncpg_connect_args(url)


def test_sqlalchemy_only_options_are_left_out() -> None:
    args = asyncpg_connect_args("postgresql+asyncpg://postgres@127.0.0.1/x?pool_size=3")
    assert args == {"host": "127.0.0.1", "user": "postgres", "database": "x"}


def test_sqlite_has_no_asyncpg_arguments() -> None:
    with pytest.raises(ValueError, match="not a PostgreSQL URL"):
        asyncpg_connect_args("sqlite:///./var/x.db")

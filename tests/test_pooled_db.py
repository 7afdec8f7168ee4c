"""`DATABASE_POOLED`: what the service sends a transaction-pooling proxy, and a PgBouncer in
transaction mode carrying the service's engine under concurrent load."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy import select, text

from cryptocheckout.catalogue.models import Product
from cryptocheckout.config import Settings
from cryptocheckout.kit.db import (
    asyncpg_connect_kwargs,
    create_engine,
    is_pooled,
    pooled_set_local,
)
from tests.support.pgbouncer import pooled_url

URL = "postgresql://shop:pw@db.internal:6432/shop?sslmode=require&prepared_statement_cache_size=50"


def test_direct_connect_kwargs_keep_startup_parameters_and_cache() -> None:
    kwargs = asyncpg_connect_kwargs(
        URL, pooled=False, server_settings={"lock_timeout": "1000"}, command_timeout=2.5
    )
    assert kwargs["server_settings"] == {"lock_timeout": "1000"}
    assert kwargs["statement_cache_size"] == 50
    assert kwargs["ssl"] == "require"
    assert kwargs["command_timeout"] == 2.5
    assert (kwargs["host"], kwargs["port"], kwargs["user"], kwargs["database"]) == (
        "db.internal",
        6432,
        "shop",
        "shop",
    )


def test_pooled_connect_kwargs_send_no_startup_parameters_and_cache_nothing() -> None:
    kwargs = asyncpg_connect_kwargs(
        URL, pooled=True, server_settings={"lock_timeout": "1000"}, command_timeout=2.5
    )
    assert "server_settings" not in kwargs
    assert kwargs["statement_cache_size"] == 0
    assert kwargs["ssl"] == "require"
    assert kwargs["command_timeout"] == 2.5  # client-side: nothing reaches the server
    assert pooled_set_local({"lock_timeout": "1000"}) == ["SET LOCAL lock_timeout = '1000'"]
    with pytest.raises(ValueError):
        pooled_set_local({"lock_timeout; DROP TABLE x": "1"})


def test_database_pooled_setting_reaches_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_POOLED", "true")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.engine_options()["pooled"] is True
    monkeypatch.delenv("DATABASE_POOLED")
    assert Settings(_env_file=None).engine_options()["pooled"] is False  # type: ignore[call-arg]
    pooled = create_engine(URL, pooled=True)
    direct = create_engine(URL)
    assert is_pooled(pooled) and not is_pooled(direct)
    with pytest.raises(ValueError):
        create_engine(URL, pooled=True, connect_args={"server_settings": {"lock_timeout": "1"}})


@pytest.mark.parametrize("dialect", ["postgresql"], indirect=True)
async def test_pooled_engine_through_pgbouncer_under_concurrency(
    database_url: str, pgbouncer_port: int
) -> None:
    pooled = create_engine(pooled_url(database_url, pgbouncer_port), pooled=True, pool_size=20)
    try:
        # Many client connections, few server connections (default_pool_size = 20), the
        # same statements over and over: named statements kept by asyncpg would collide
        # ("prepared statement ... already exists") or vanish ("does not exist").
        async def session_work(n: int) -> int:
            total = 0
            for i in range(10):
                async with pooled.begin() as conn:
                    await conn.execute(text("SET LOCAL lock_timeout = '1000'"))
                    shown = (await conn.execute(text("SHOW lock_timeout"))).scalar_one()
                    assert shown == "1s"
                    total += len((await conn.execute(select(Product.id).limit(1))).all())
                    total += (
                        await conn.execute(
                            text("SELECT CAST(:n AS integer) + CAST(:i AS integer)"),
                            {"n": n, "i": i},
                        )
                    ).scalar_one()
            return total

        results = await asyncio.gather(*(session_work(n) for n in range(30)))
        assert results == [sum(n + i for i in range(10)) for n in range(30)]
        # SET LOCAL ended with its transaction: nothing leaks onto a shared server connection.
        async with pooled.begin() as conn:
            assert (await conn.execute(text("SHOW lock_timeout"))).scalar_one() == "0"
    finally:
        await pooled.dispose()


@pytest.mark.parametrize("dialect", ["postgresql"], indirect=True)
async def test_pgbouncer_refuses_startup_parameters(database_url: str, pgbouncer_port: int) -> None:
    """Why `DATABASE_POOLED` sends none: this is what the IPN writers met (issue 14)."""
    url = pooled_url(database_url, pgbouncer_port)
    direct = asyncpg_connect_kwargs(url, pooled=False, server_settings={"lock_timeout": "1000"})
    with pytest.raises(asyncpg.PostgresError, match="unsupported startup parameter"):
        await asyncpg.connect(**direct)
    conn = await asyncpg.connect(
        **asyncpg_connect_kwargs(url, pooled=True, server_settings={"lock_timeout": "1000"})
    )
    try:
        async with conn.transaction():
            for statement in pooled_set_local({"lock_timeout": "1000"}):
                await conn.execute(statement)
            assert await conn.fetchval("SHOW lock_timeout") == "1s"
            assert await conn.fetchval("SELECT $1::int + 1", 41) == 42
    finally:
        await conn.close()

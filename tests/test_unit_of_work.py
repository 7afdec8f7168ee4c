"""The unit of work commits once when its block ends and rolls back when it raises; a
read-only session commits nothing and, on SQLite, never queues behind writers."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cryptocheckout.catalogue.models import Product
from cryptocheckout.kit.db import read_only, unit_of_work

Sessions = async_sessionmaker[AsyncSession]


async def _count(sessionmaker: Sessions) -> int:
    async with read_only(sessionmaker) as session:
        return int((await session.execute(select(func.count()).select_from(Product))).scalar_one())


def _product(sku: str) -> Product:
    return Product(sku=sku, name=sku, price=Decimal("1.00"), currency="USD")


async def test_unit_of_work_commits_when_the_block_ends(sessionmaker: Sessions) -> None:
    async with unit_of_work(sessionmaker) as session:
        session.add(_product("A"))
    assert await _count(sessionmaker) == 1


async def test_unit_of_work_rolls_back_when_the_block_raises(sessionmaker: Sessions) -> None:
    with pytest.raises(RuntimeError):
        async with unit_of_work(sessionmaker) as session:
            session.add(_product("A"))
            await session.flush()
            raise RuntimeError("a rule refused")
    assert await _count(sessionmaker) == 0


async def test_read_only_commits_nothing(sessionmaker: Sessions) -> None:
    async with read_only(sessionmaker) as session:
        session.add(_product("A"))
        await session.flush()
    assert await _count(sessionmaker) == 0


async def test_a_reader_does_not_hold_back_a_writer(
    sessionmaker: Sessions, engine: AsyncEngine
) -> None:
    """On SQLite a writer's BEGIN IMMEDIATE would wait for a reader's; a reader takes no lock."""
    async with read_only(sessionmaker) as reader:
        assert (await reader.execute(select(func.count()).select_from(Product))).scalar_one() == 0

        async def write() -> None:
            async with unit_of_work(sessionmaker) as session:
                session.add(_product("B"))

        # Within the busy timeout a blocked writer would hang here rather than fail.
        await asyncio.wait_for(write(), timeout=10)
        # The reader still sees its own snapshot on both databases.
        assert (await reader.execute(select(Product.sku))).scalars().all() in ([], ["B"])
    assert await _count(sessionmaker) == 1

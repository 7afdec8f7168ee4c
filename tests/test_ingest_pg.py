"""The PostgreSQL notification writer: its connection settings and its lock timeout."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cryptocheckout.kit.db import create_engine
from cryptocheckout.webhooks import ingest
from cryptocheckout.webhooks.models import WebhookLog
from tests.support.ipn import ipn_payload, signed

pytestmark = pytest.mark.parametrize("dialect", ["postgresql"], indirect=True)
SECRET = "s"


def _incoming(payment_id: int) -> ingest.Incoming:
    body, _ = signed(
        ipn_payload(
            payment_id, "waiting", order_id="x", price_amount="1", pay_amount="0.1", updated_at=1
        ),
        SECRET,
    )
    return ingest.incoming(body, json.loads(body))


async def test_sqlalchemy_url_options_do_not_reach_postgresql(
    database_url: str, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    # SQLAlchemy's documented setting for pgbouncer; PostgreSQL itself knows no such thing.
    engine = create_engine(database_url + "?prepared_statement_cache_size=0")
    store = ingest.NotificationStore(engine)
    await store.start()
    try:
        assert await store.store(_incoming(1)) is True
    finally:
        await store.stop()
        await engine.dispose()


async def test_a_locked_row_does_not_stall_other_notifications(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    store = ingest.NotificationStore(engine)
    await store.start()
    try:
        locked = _incoming(10)
        assert await store.store(locked) is True
        async with engine.connect() as holder:
            await holder.execute(
                text("SELECT 1 FROM webhook_logs WHERE fingerprint = :f FOR UPDATE"),
                {"f": locked.fingerprint},
            )
            started = time.monotonic()
            redelivery = asyncio.ensure_future(store.store(_incoming(10)))
            await asyncio.sleep(0.01)
            fresh = [_incoming(20 + n) for n in range(3)]
            results = await asyncio.gather(*(store.store(item) for item in fresh))
            elapsed = time.monotonic() - started
            assert results == [True, True, True]
            assert elapsed < ingest.STORE_TIMEOUT_SECONDS  # stored despite the lock
            with pytest.raises(ingest.StoreUnavailable):
                await redelivery  # its row stays locked: 503, and NOWPayments retries
            await holder.rollback()
        assert await store.store(_incoming(10)) is False  # the retry is counted
    finally:
        await store.stop()
    async with sessionmaker() as session:
        rows = (await session.execute(select(WebhookLog.deliveries))).scalars().all()
    assert sorted(rows) == [1, 1, 1, 2]

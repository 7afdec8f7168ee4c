"""The SQLite default under a small shop's mixed load, over real HTTP: nothing turned away.

Notifications and order creations arrive together on many connections; every transaction of
the process queues for SQLite's one write lock (kit/db.py), and the notification writer
group-commits, so each delivery is stored (200) and each order created (201), none 503.
The full-size version of this load is bench/sqlite_mixed_bench.py.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, text

from cryptocheckout.app import create_app
from cryptocheckout.config import Settings
from cryptocheckout.kit.db import SQLITE_BUSY_TIMEOUT_MS, create_engine
from cryptocheckout.kit.migrate import upgrade
from cryptocheckout.webhooks.ingest import NotificationStore, incoming
from cryptocheckout.webhooks.models import WebhookLog
from tests.conftest import ADMIN_TOKEN
from tests.support.ipn import ipn_payload, signed
from tests.support.servers import serve_in_thread

pytestmark = pytest.mark.parametrize("dialect", ["sqlite"], indirect=True)

IPN_CONNECTIONS = 24
IPN_PER_CONNECTION = 10
ORDER_CONNECTIONS = 8
ORDERS_PER_CONNECTION = 5


async def test_mixed_notifications_and_orders_get_no_503(
    settings: Settings, tmp_path: Path
) -> None:
    # A database of its own: the shop's worker may still be applying notifications while
    # the server shuts down, and that must not reach the tests that follow.
    database_url = f"sqlite:///{tmp_path}/mixed.db"
    await asyncio.to_thread(upgrade, database_url)
    settings = settings.model_copy(update={"database_url": database_url})
    secret = settings.nowpayments_ipn_secret.get_secret_value()
    notifications = [
        signed(
            ipn_payload(
                7_000_000 + n,
                "waiting",
                order_id=f"mixed-{n}",
                price_amount="12.5",
                pay_amount="0.0003",
                updated_at=1_700_000_000_000 + n,
            ),
            secret,
        )
        for n in range(IPN_CONNECTIONS * IPN_PER_CONNECTION)
    ]
    ipn_answers: Counter[int] = Counter()
    order_answers: Counter[int] = Counter()
    limits = httpx.Limits(max_connections=IPN_CONNECTIONS + ORDER_CONNECTIONS + 1)
    # The shop as one process runs it: API and worker, on the SQLite file of this test.
    with serve_in_thread(create_app(settings, run_worker=True)) as base:
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            product = await client.post(
                "/api/admin/products",
                json={"sku": "MIX-1", "name": "Mixed", "price": "12.50", "currency": "USD"},
                headers=admin,
            )
            assert product.status_code == 201, product.text
            product_id = product.json()["id"]
            keys = await client.post(
                f"/api/admin/products/{product_id}/keys",
                # one per order: checkout holds a key for each
                json={
                    "keys": [
                        f"MIX-KEY-{i}" for i in range(ORDER_CONNECTIONS * ORDERS_PER_CONNECTION)
                    ]
                },
                headers=admin,
            )
            assert keys.status_code == 201

            async def notify(connection: int) -> None:
                for i in range(IPN_PER_CONNECTION):
                    body, headers = notifications[connection * IPN_PER_CONNECTION + i]
                    response = await client.post(
                        "/api/webhooks/nowpayments", content=body, headers=headers
                    )
                    ipn_answers[response.status_code] += 1
                    if i % 3 == 0:  # NOWPayments redelivers: counted, not stored again
                        again = await client.post(
                            "/api/webhooks/nowpayments", content=body, headers=headers
                        )
                        ipn_answers[again.status_code] += 1

            async def order() -> None:
                for _ in range(ORDERS_PER_CONNECTION):
                    response = await client.post(
                        "/api/orders",
                        json={
                            "email": "buyer@example.com",
                            "items": [{"product_id": product_id, "quantity": 1}],
                        },
                        headers={"Idempotency-Key": str(uuid.uuid4())},
                    )
                    order_answers[response.status_code] += 1

            await asyncio.gather(
                *(notify(c) for c in range(IPN_CONNECTIONS)),
                *(order() for _ in range(ORDER_CONNECTIONS)),
            )

    redeliveries = IPN_CONNECTIONS * len(range(0, IPN_PER_CONNECTION, 3))
    assert ipn_answers == {200: len(notifications) + redeliveries}
    assert order_answers == {201: ORDER_CONNECTIONS * ORDERS_PER_CONNECTION}
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            stored = (await conn.execute(select(func.count()).select_from(WebhookLog))).scalar_one()
            deliveries = (await conn.execute(select(func.sum(WebhookLog.deliveries)))).scalar_one()
    finally:
        await engine.dispose()
    assert stored == len(notifications)
    assert deliveries == len(notifications) + redeliveries


async def test_the_writer_takes_the_lock_soon_after_another_holder_lets_go(
    settings: Settings, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path}/eager.db"
    await asyncio.to_thread(upgrade, database_url)
    other, engine = create_engine(database_url), create_engine(database_url)
    store = NotificationStore(engine)
    await store.start()
    try:
        body, _ = signed(
            ipn_payload(1, "waiting", order_id="x", price_amount="1", pay_amount="0.1"),
            settings.nowpayments_ipn_secret.get_secret_value(),
        )
        async with other.begin() as holder:  # another writer holds SQLite's write lock
            await holder.execute(text("DELETE FROM rejected_webhooks"))
            stored = asyncio.ensure_future(store.store(incoming(body, json.loads(body))))
            await asyncio.sleep(0.3)
            assert not stored.done()  # waiting for the lock, not failed
        assert await stored is True
        # The writer's connection is back on the ordinary busy timeout for other users.
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            cursor = await raw.driver_connection.execute("PRAGMA busy_timeout")
            assert (await cursor.fetchone())[0] == SQLITE_BUSY_TIMEOUT_MS
    finally:
        await store.stop()
        await other.dispose()
        await engine.dispose()

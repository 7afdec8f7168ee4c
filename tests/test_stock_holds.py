"""Stock held from checkout: rows per key, never two orders on one key, released on time."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cryptocheckout.catalogue.models import LicenceKey, StockHold
from cryptocheckout.kit.clock import utcnow
from cryptocheckout.orders.models import OrderStatus
from cryptocheckout.worker import Worker
from tests.conftest import Admin
from tests.support.shop import paying_order
from tests.test_notifications import Flow
from tests.test_notifications import flow as flow  # the fixture

Sessions = async_sessionmaker[AsyncSession]


def _body(product_id: str, quantity: int = 1) -> dict[str, Any]:
    return {"email": "b@example.com", "items": [{"product_id": product_id, "quantity": quantity}]}


async def _stock(client: httpx.AsyncClient, admin: Admin, product_id: str) -> int:
    """The admin's `stock` count (PATCH answers the product with it)."""
    response = await client.patch(
        f"/api/admin/products/{product_id}", json={"active": True}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    return int(response.json()["stock"])


async def _in_stock(client: httpx.AsyncClient, product_id: str) -> bool:
    products = (await client.get("/api/products")).json()["items"]
    return bool(next(p for p in products if p["id"] == product_id)["in_stock"])


async def _lapse(sessionmaker: Sessions, order_id: str) -> None:
    """Moves time: the order's holds lapsed a minute ago."""
    async with sessionmaker() as session:
        await session.execute(
            update(StockHold)
            .where(StockHold.order_id == uuid.UUID(order_id))
            .values(expires_at=utcnow() - timedelta(minutes=1))
        )
        await session.commit()


async def test_checkout_holds_keys_and_refuses_beyond_the_free_stock(
    client: httpx.AsyncClient, admin: Admin, sessionmaker: Sessions
) -> None:
    product = await admin.product(keys=3)
    first = await client.post("/api/orders", json=_body(product["id"], 2))
    assert first.status_code == 201, first.text
    assert await _stock(client, admin, product["id"]) == 1
    refused = await client.post("/api/orders", json=_body(product["id"], 2))
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["type"] == "out_of_stock"
    assert "only 1" in refused.json()["errors"][0]["msg"]
    async with sessionmaker() as session:
        holds = (await session.execute(select(StockHold))).scalars().all()
    assert len(holds) == 2 and {h.order_id for h in holds} == {uuid.UUID(first.json()["id"])}
    remaining = utcnow() + timedelta(minutes=40) - holds[0].expires_at  # type: ignore[operator]
    assert timedelta(0) <= remaining < timedelta(minutes=1)  # 30 minutes + 10 of grace
    # the hold lapses: the keys are free for the next checkout at once, and the worker
    # deletes the lapsed rows
    await _lapse(sessionmaker, first.json()["id"])
    assert await _stock(client, admin, product["id"]) == 3
    await Worker(sessionmaker).release_holds()
    async with sessionmaker() as session:
        assert (await session.scalar(select(func.count()).select_from(StockHold))) == 0
    again = await client.post("/api/orders", json=_body(product["id"], 3))
    assert again.status_code == 201, again.text
    assert not await _in_stock(client, product["id"])  # all three held


async def test_fulfilment_delivers_the_held_keys(flow: Flow, sessionmaker: Sessions) -> None:
    paying = await paying_order(sessionmaker, keys=3)
    async with sessionmaker() as session:
        held = set(
            (
                await session.execute(
                    select(StockHold.licence_key_id).where(StockHold.order_id == paying.order_id)
                )
            ).scalars()
        )
    await flow.send(paying, "finished")
    await flow.drain()
    assert (await flow.state(paying))[0] is OrderStatus.FULFILLED
    async with sessionmaker() as session:
        delivered = set(
            (
                await session.execute(
                    select(LicenceKey.id).where(LicenceKey.order_id == paying.order_id)
                )
            ).scalars()
        )
        holds = await session.scalar(select(func.count()).select_from(StockHold))
    assert delivered == held and len(held) == 1
    assert holds == 0


async def test_a_late_payment_after_the_hold_lapsed_waits_for_stock_and_is_flagged(
    flow: Flow, sessionmaker: Sessions
) -> None:
    late = await paying_order(sessionmaker, keys=1)
    async with sessionmaker() as session:
        await session.execute(
            update(StockHold)
            .where(StockHold.order_id == late.order_id)
            .values(expires_at=utcnow() - timedelta(minutes=1))
        )
        await session.commit()
    await Worker(sessionmaker).release_holds()
    # another customer takes the last key meanwhile
    other = await paying_order(sessionmaker, keys=0, external_id="999")
    async with sessionmaker() as session:
        key = (
            await session.execute(
                select(LicenceKey).where(LicenceKey.product_id == late.product_id)
            )
        ).scalar_one()
        key.order_id = other.order_id
        await session.commit()
    await flow.send(late, "expired")
    await flow.send(late, "finished")  # the money arrives after all
    await flow.drain()
    order_status, _, payment = await flow.state(late)
    assert order_status is OrderStatus.PAID  # waiting for stock (the fulfilment job retries)
    assert payment.needs_review and "stock hold lapsed" in (payment.review_reason or "")
    assert payment.credit == Decimal("12.5")


async def test_paid_orders_keep_their_holds_until_fulfilment(
    flow: Flow, sessionmaker: Sessions
) -> None:
    paying = await paying_order(sessionmaker, quantity=2, keys=1)  # one key short: it waits
    await flow.send(paying, "finished")
    await flow.drain()
    assert (await flow.state(paying))[0] is OrderStatus.PAID
    await Worker(sessionmaker).release_holds()
    async with sessionmaker() as session:
        holds = (await session.execute(select(StockHold))).scalars().all()
    assert [(h.order_id, h.expires_at) for h in holds] == [(paying.order_id, None)]


async def test_concurrent_checkouts_never_hold_one_key_twice(
    client: httpx.AsyncClient, admin: Admin, sessionmaker: Sessions
) -> None:
    product = await admin.product(keys=2)
    answers = await asyncio.gather(
        *(client.post("/api/orders", json=_body(product["id"])) for _ in range(6))
    )
    assert sorted(a.status_code for a in answers) == [201, 201, 422, 422, 422, 422]
    async with sessionmaker() as session:
        holds = (await session.execute(select(StockHold))).scalars().all()
    assert len({h.licence_key_id for h in holds}) == len(holds) == 2
    assert len({h.order_id for h in holds}) == 2

"""The `fulfil_order` job: assign the paid order's licence keys, then mark it fulfilled.

Idempotent: keys already assigned to the order count towards it, and an order that is not
`paid` any more (fulfilled, refunded) is left alone, so a job that runs twice (its worker
died after committing, before it could say so) has one effect.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.catalogue.models import LicenceKey
from cryptocheckout.kit import jobs
from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.dialects import dialect_name
from cryptocheckout.orders import repository as orders
from cryptocheckout.orders.models import OrderItem, OrderStatus
from cryptocheckout.payments.models import ChangeCause
from cryptocheckout.payments.state_machine import FULFIL_ORDER_JOB, move_order


class OutOfStock(jobs.RetryLater):
    """Not enough licence keys: the job waits (backing off) until staff add keys."""


async def fulfil_order(session: AsyncSession, payload: Mapping[str, Any]) -> None:
    order_id = uuid.UUID(str(payload["order_id"]))
    order = await orders.lock(session, order_id)
    if order is None or order.status is not OrderStatus.PAID:
        return
    items = (
        await session.execute(select(OrderItem).where(OrderItem.order_id == order_id))
    ).scalars()
    wanted: Counter[uuid.UUID] = Counter()
    for item in items:
        wanted[item.product_id] += item.quantity
    held = dict(
        (
            await session.execute(
                select(LicenceKey.product_id, func.count())
                .where(LicenceKey.order_id == order_id)
                .group_by(LicenceKey.product_id)
            )
        ).all()
    )
    now = utcnow()
    for product_id, quantity in wanted.items():
        missing = quantity - int(held.get(product_id, 0))
        if missing <= 0:
            continue
        free = (
            select(LicenceKey.id)
            .where(LicenceKey.product_id == product_id, LicenceKey.order_id.is_(None))
            .order_by(LicenceKey.created_at)
            .limit(missing)
        )
        if dialect_name(session) == "postgresql":
            free = free.with_for_update(skip_locked=True)
        key_ids = list((await session.execute(free)).scalars())
        if len(key_ids) < missing:
            raise OutOfStock(f"product {product_id}: {len(key_ids)} of {missing} keys available")
        await session.execute(
            update(LicenceKey)
            .where(LicenceKey.id.in_(key_ids))
            .values(order_id=order_id, assigned_at=now)
        )
    await move_order(
        session, order, OrderStatus.FULFILLED, cause=ChangeCause.WORKER, note="keys assigned"
    )


async def wake_waiting_orders(session: AsyncSession) -> int:
    """New keys arrived: paid orders waiting for stock try again now, not at their backoff."""
    return await jobs.run_soon(session, FULFIL_ORDER_JOB)


# The jobs this package handles, for the worker to run.
JOB_HANDLERS: dict[str, jobs.Handler] = {FULFIL_ORDER_JOB: fulfil_order}

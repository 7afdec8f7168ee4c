"""All SQL of orders."""

from __future__ import annotations

import uuid
from collections import Counter

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from cryptocheckout.orders.models import Order, OrderItem


async def get_with_items(session: AsyncSession, order_id: uuid.UUID) -> Order | None:
    rows = await session.execute(
        select(Order).where(Order.id == order_id).options(selectinload(Order.items))
    )
    return rows.scalar_one_or_none()


async def lock(session: AsyncSession, order_id: uuid.UUID) -> Order | None:
    """Locks the order row (PostgreSQL; SQLite's transactions are single-writer already).

    Everything that changes an order's payments locks the order first, then the payment,
    so two workers never wait on each other in opposite orders.
    """
    rows = await session.execute(
        select(Order)
        .where(Order.id == order_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return rows.scalar_one_or_none()


async def exists(session: AsyncSession, order_id: str | None) -> bool:
    """Whether `order_id` (as the provider echoes it back: any text) is one of our orders."""
    if not order_id:
        return False
    try:
        parsed = uuid.UUID(order_id)
    except ValueError:
        return False
    return (await session.get(Order, parsed)) is not None


async def quantities(session: AsyncSession, order_id: uuid.UUID) -> Counter[uuid.UUID]:
    """How many of each product the order bought."""
    rows = await session.execute(
        select(OrderItem.product_id, OrderItem.quantity).where(OrderItem.order_id == order_id)
    )
    wanted: Counter[uuid.UUID] = Counter()
    for product_id, quantity in rows.all():
        wanted[product_id] += quantity
    return wanted

"""All SQL of orders."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from cryptocheckout.orders.models import Order


async def get_with_items(session: AsyncSession, order_id: uuid.UUID) -> Order | None:
    rows = await session.execute(
        select(Order).where(Order.id == order_id).options(selectinload(Order.items))
    )
    return rows.scalar_one_or_none()

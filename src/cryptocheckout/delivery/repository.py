"""All SQL of delivery: the per-order counters and what the e-mails need to read."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.delivery.models import Delivery
from cryptocheckout.kit.dialects import dialect_name, insert
from cryptocheckout.orders import repository as orders
from cryptocheckout.orders.models import Order
from cryptocheckout.payments.models import Payment


async def get_order(session: AsyncSession, order_id: uuid.UUID) -> Order | None:
    """The order with its items (the e-mails list them)."""
    return await orders.get_with_items(session, order_id)


async def count_view(session: AsyncSession, order_id: uuid.UUID, now: datetime) -> None:
    """One more view of the order's keys (one statement: concurrent views all count)."""
    table = Delivery.__table__
    statement = insert(session, Delivery).values(
        order_id=order_id, views=1, last_viewed_at=now, created_at=now, updated_at=now
    )
    statement = statement.on_conflict_do_update(
        index_elements=["order_id"],
        set_={"views": table.c.views + 1, "last_viewed_at": now, "updated_at": now},
    )
    await session.execute(statement)


async def lock_delivery(session: AsyncSession, order_id: uuid.UUID, now: datetime) -> Delivery:
    """The order's delivery row, created if needed, locked until the transaction ends."""
    await session.execute(
        insert(session, Delivery)
        .values(order_id=order_id, created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=["order_id"])
    )
    statement = select(Delivery).where(Delivery.order_id == order_id)
    if dialect_name(session) == "postgresql":
        statement = statement.with_for_update()
    # populate_existing: the counters must be the locked row's, not a cached copy.
    statement = statement.execution_options(populate_existing=True)
    return (await session.execute(statement)).scalar_one()


async def latest_payment(session: AsyncSession, order_id: uuid.UUID) -> Payment | None:
    """The order's payment that most recently received money (else the newest one)."""
    rows = await session.execute(
        select(Payment)
        .where(Payment.order_id == order_id)
        .order_by(Payment.actually_paid.is_(None), Payment.updated_at.desc())
        .limit(1)
    )
    return rows.scalar_one_or_none()

"""The pages' reads: an order's payments, and the few columns the status poll needs."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from cryptocheckout.orders.models import Order, OrderStatus
from cryptocheckout.payments.models import Payment, PaymentKind, PaymentStatus


async def payments_of(session: AsyncSession, order_id: uuid.UUID) -> Sequence[Payment]:
    """Every payment of the order, newest first (repeated deposits included)."""
    rows = await session.execute(
        select(Payment)
        .where(Payment.order_id == order_id)
        .order_by(Payment.created_at.desc(), Payment.id)
    )
    return rows.scalars().all()


@dataclass(frozen=True)
class StatusRow:
    access_token: str
    status: OrderStatus
    payment_id: uuid.UUID | None
    payment_status: PaymentStatus | None
    payment_kind: PaymentKind | None
    confirmations: int


async def status_rows(
    conn: AsyncConnection, order_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, StatusRow]:
    """Each order's status and its latest shop-opened payment's: one indexed query for all.

    Core rows on a bare connection (no session, no ORM objects): the poll of every open
    order page comes here.
    """
    latest = (
        select(Payment.id)
        .where(Payment.order_id == Order.id, Payment.parent_external_id.is_(None))
        .order_by(Payment.created_at.desc())
        .limit(1)
        .correlate(Order)
        .scalar_subquery()
    )
    query = (
        select(
            Order.id,
            Order.access_token,
            Order.status,
            Payment.id,
            Payment.status,
            Payment.kind,
            Payment.confirmations,
        )
        .select_from(Order)
        .outerjoin(Payment, Payment.id == latest)
        .where(Order.id.in_(order_ids))
    )

    rows = await conn.execute(query)
    return {
        row[0]: StatusRow(
            row[1],
            OrderStatus(row[2]),
            row[3],
            None if row[4] is None else PaymentStatus(row[4]),
            None if row[5] is None else PaymentKind(row[5]),
            row[6] or 0,
        )
        for row in rows
    }

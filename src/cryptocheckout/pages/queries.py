"""The pages' reads: an order's payments, and the few columns the status poll needs."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

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


async def status_row(session: AsyncSession, order_id: uuid.UUID) -> StatusRow | None:
    """The order's status and its latest shop-opened payment's, in one indexed query."""
    latest = (
        select(Payment.id)
        .where(Payment.order_id == Order.id, Payment.parent_external_id.is_(None))
        .order_by(Payment.created_at.desc())
        .limit(1)
        .correlate(Order)
        .scalar_subquery()
    )
    row = (
        await session.execute(
            select(
                Order.access_token,
                Order.status,
                Payment.id,
                Payment.status,
                Payment.kind,
                Payment.confirmations,
            )
            .select_from(Order)
            .outerjoin(Payment, Payment.id == latest)
            .where(Order.id == order_id)
        )
    ).one_or_none()
    if row is None:
        return None
    return StatusRow(row[0], row[1], row[2], row[3], row[4], row[5] or 0)

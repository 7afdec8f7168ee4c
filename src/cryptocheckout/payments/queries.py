"""Read-side queries of payments for the views above them (the customer's order, admin)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.orders.models import Order
from cryptocheckout.payments import repository
from cryptocheckout.payments.models import Payment
from cryptocheckout.payments.schemas import PaymentSummary
from cryptocheckout.payments.state_machine import ORDER_RANK, PAID_RANK


@dataclass(frozen=True)
class OrderBalance:
    """What the order's payments credited, what is still due and what is over its total, in
    the order's currency (exact: sums and differences of eight-decimal credits)."""

    paid: Decimal
    due: Decimal
    over: Decimal


def order_balance(order: Order, credits: Decimal) -> OrderBalance:
    """Nothing is due once the order is paid (by its credits, within the tolerance, or by
    staff) or beyond."""
    zero = Decimal(0)
    settled = ORDER_RANK[order.status] >= PAID_RANK
    return OrderBalance(
        paid=credits,
        due=zero if settled else max(order.total - credits, zero),
        over=max(credits - order.total, zero),
    )


async def balance_of(session: AsyncSession, order: Order) -> OrderBalance:
    credits, _ = await repository.credited(session, order.id)
    return order_balance(order, credits)


async def current_summary(session: AsyncSession, order_id: uuid.UUID) -> PaymentSummary | None:
    """The order's most recent payment (not a provider-started one), as the customer sees it."""
    payment = (
        await session.execute(
            select(Payment)
            .where(Payment.order_id == order_id, Payment.parent_external_id.is_(None))
            .order_by(Payment.created_at.desc())
            .limit(1)
        )
    ).scalar_one_or_none()
    return PaymentSummary.model_validate(payment) if payment is not None else None

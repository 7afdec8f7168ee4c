"""All SQL of payments."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.payments.models import (
    OPEN_PAYMENT_STATUSES,
    Payment,
    PaymentStatus,
)


async def by_external_id(session: AsyncSession, external_id: str) -> Payment | None:
    rows = await session.execute(select(Payment).where(Payment.external_id == external_id))
    return rows.scalar_one_or_none()


async def by_invoice_id(session: AsyncSession, invoice_id: str) -> Payment | None:
    """The payment row of an invoice (the first one made for it)."""
    rows = await session.execute(
        select(Payment)
        .where(Payment.invoice_id == invoice_id, Payment.parent_external_id.is_(None))
        .order_by(Payment.created_at)
        .limit(1)
    )
    return rows.scalar_one_or_none()


async def open_for_order(session: AsyncSession, order_id: uuid.UUID) -> Payment | None:
    rows = await session.execute(
        select(Payment).where(
            Payment.order_id == order_id,
            Payment.status.in_(OPEN_PAYMENT_STATUSES),
            Payment.parent_external_id.is_(None),
        )
    )
    return rows.scalar_one_or_none()


async def credited(session: AsyncSession, order_id: uuid.UUID) -> tuple[Decimal, int]:
    """The order's balance (the credits of all its payments, in the order's currency) and how
    many of its payments credit it. Summed in Python: SQLite keeps money as exact text, and
    its SUM would go through float."""
    rows = await session.execute(select(Payment.credit).where(Payment.order_id == order_id))
    credits = [credit for credit in rows.scalars() if credit > 0]
    return sum(credits, Decimal(0)), len(credits)


async def purchase_of(session: AsyncSession, order_id: uuid.UUID) -> str | None:
    """NOWPayments' purchase of the order's first payment that credited it (partly paid)."""
    rows = await session.execute(
        select(Payment.purchase_id)
        .where(Payment.order_id == order_id, Payment.purchase_id.is_not(None), Payment.credit > 0)
        .order_by(Payment.created_at)
        .limit(1)
    )
    return rows.scalar_one_or_none()


async def lock_payment(session: AsyncSession, payment_id: uuid.UUID) -> Payment:
    rows = await session.execute(
        select(Payment)
        .where(Payment.id == payment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return rows.scalar_one()


# error_code of a payment whose create call may or may not have reached NOWPayments.
OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"


async def unconfirmed_create(session: AsyncSession, order_id: str | None) -> Payment | None:
    """The order's payment whose creation timed out with its outcome unknown, if any (a
    direct payment or an invoice: neither got its NOWPayments id)."""
    try:
        parsed = uuid.UUID(order_id or "")
    except ValueError:
        return None
    rows = await session.execute(
        select(Payment)
        .where(
            Payment.order_id == parsed,
            Payment.external_id.is_(None),
            Payment.invoice_id.is_(None),
            Payment.parent_external_id.is_(None),
            Payment.error_code == OUTCOME_UNKNOWN,
        )
        .order_by(Payment.created_at.desc())
        .limit(1)
    )
    return rows.scalar_one_or_none()


async def quiet_since(
    session: AsyncSession, statuses: Iterable[PaymentStatus], before: datetime, *, limit: int
) -> list[uuid.UUID]:
    """Payments in `statuses` with a provider id and no change since `before`, quietest first."""
    rows = await session.execute(
        select(Payment.id)
        .where(
            Payment.status.in_(list(statuses)),
            Payment.external_id.is_not(None),
            Payment.updated_at < before,
        )
        .order_by(Payment.updated_at)
        .limit(limit)
    )
    return list(rows.scalars())


async def creation_in_flight(
    session: AsyncSession, order_id: uuid.UUID, *, since: datetime
) -> bool:
    """Whether a create call for the order may still be running: a payment recorded since
    `since` that has no answer from NOWPayments yet."""
    rows = await session.execute(
        select(Payment.id)
        .where(
            Payment.order_id == order_id,
            Payment.status == PaymentStatus.CREATED,
            Payment.external_id.is_(None),
            Payment.invoice_id.is_(None),
            Payment.created_at >= since,
        )
        .limit(1)
    )
    return rows.first() is not None


async def unanswered_create(
    session: AsyncSession, order_id: uuid.UUID, *, before: datetime
) -> Payment | None:
    """The order's newest payment (direct or invoice) recorded before `before` whose
    NOWPayments answer never arrived: still `created`, or marked failed with its outcome
    unknown."""
    rows = await session.execute(
        select(Payment)
        .where(
            Payment.order_id == order_id,
            Payment.external_id.is_(None),
            Payment.invoice_id.is_(None),
            Payment.parent_external_id.is_(None),
            Payment.created_at < before,
            (Payment.status == PaymentStatus.CREATED) | (Payment.error_code == OUTCOME_UNKNOWN),
        )
        .order_by(Payment.created_at.desc())
        .limit(1)
    )
    return rows.scalar_one_or_none()

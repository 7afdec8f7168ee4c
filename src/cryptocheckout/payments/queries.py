"""Read-side queries of payments for the views above them (the customer's order, admin)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.payments.models import Payment
from cryptocheckout.payments.schemas import PaymentSummary


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

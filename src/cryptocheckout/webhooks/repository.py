"""SQL of the stored notifications, as the worker and staff use them.

(The IPN endpoint's own writers, in `ingest.py`, keep their statements beside the batching
they serve: they are the fast path.)
"""

from __future__ import annotations

import uuid

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.dialects import dialect_name
from cryptocheckout.webhooks.models import WebhookLog, WebhookLogStatus


async def next_pending(session: AsyncSession) -> WebhookLog | None:
    """The oldest notification due to be applied, locked; workers skip each other's rows."""
    now = utcnow()
    query = (
        select(WebhookLog)
        .where(
            WebhookLog.status == WebhookLogStatus.PENDING,
            or_(WebhookLog.next_attempt_at.is_(None), WebhookLog.next_attempt_at <= now),
        )
        .order_by(WebhookLog.created_at)
        .limit(1)
    )
    if dialect_name(session) == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return (await session.execute(query)).scalar_one_or_none()


async def lock(session: AsyncSession, log_id: uuid.UUID) -> WebhookLog | None:
    return await session.get(WebhookLog, log_id, with_for_update=True)


async def get(session: AsyncSession, log_id: uuid.UUID) -> WebhookLog | None:
    return await session.get(WebhookLog, log_id)

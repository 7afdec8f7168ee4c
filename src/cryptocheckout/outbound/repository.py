"""All SQL of outbound webhooks."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.kit.jobs_models import Job
from cryptocheckout.kit.pagination import page, split
from cryptocheckout.outbound.models import WebhookDelivery, WebhookEndpoint


async def enabled_endpoints(session: AsyncSession) -> list[WebhookEndpoint]:
    rows = await session.execute(select(WebhookEndpoint).where(WebhookEndpoint.enabled.is_(True)))
    return list(rows.scalars())


async def get_endpoint(
    session: AsyncSession, endpoint_id: uuid.UUID, *, for_update: bool = False
) -> WebhookEndpoint | None:
    return await session.get(
        WebhookEndpoint, endpoint_id, with_for_update=for_update, populate_existing=for_update
    )


async def list_endpoints(
    session: AsyncSession, *, limit: int, cursor: str | None
) -> tuple[list[WebhookEndpoint], str | None]:
    rows = await session.execute(page(select(WebhookEndpoint), WebhookEndpoint, limit, cursor))
    return split(list(rows.scalars()), limit)


async def list_deliveries(
    session: AsyncSession, endpoint_id: uuid.UUID, *, limit: int, cursor: str | None
) -> tuple[list[WebhookDelivery], str | None]:
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    rows = await session.execute(page(query, WebhookDelivery, limit, cursor))
    return split(list(rows.scalars()), limit)


async def get_delivery(
    session: AsyncSession, endpoint_id: uuid.UUID, delivery_id: uuid.UUID
) -> WebhookDelivery | None:
    delivery = await session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.endpoint_id != endpoint_id:
        return None
    return delivery


async def job_payload(session: AsyncSession, dedupe_key: str) -> dict[str, Any] | None:
    rows = await session.execute(select(Job.payload).where(Job.dedupe_key == dedupe_key))
    payload: dict[str, Any] | None = rows.scalar_one_or_none()
    return payload


async def record_attempt(
    session: AsyncSession,
    delivery: WebhookDelivery,
    *,
    now: datetime,
    disable_after_seconds: float,
) -> bool:
    """Logs the attempt and keeps the endpoint's failure clock; True when it got disabled."""
    endpoint = await get_endpoint(session, delivery.endpoint_id, for_update=True)
    if endpoint is None:
        return False  # deleted meanwhile, and its log with it
    session.add(delivery)
    if delivery.succeeded:
        endpoint.failing_since = None
        return False
    if endpoint.failing_since is None:
        endpoint.failing_since = now
        return False
    failing_for = (now - endpoint.failing_since).total_seconds()
    if endpoint.enabled and failing_for >= disable_after_seconds:
        endpoint.enabled = False
        endpoint.disabled_reason = (
            f"disabled after failing without a success since {endpoint.failing_since.isoformat()}"
        )
        return True
    return False


async def prune_deliveries(session: AsyncSession, before: datetime) -> int:
    result = await session.execute(
        delete(WebhookDelivery).where(WebhookDelivery.created_at < before)
    )
    return int(getattr(result, "rowcount", 0) or 0)

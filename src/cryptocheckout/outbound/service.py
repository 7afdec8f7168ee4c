"""Endpoints, their secrets, and turning order events into delivery jobs.

Services never commit: the router's unit of work (or the event job) does.
"""

from __future__ import annotations

import json
import random
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.customer.views import order_view
from cryptocheckout.kit import jobs
from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.errors import Conflict, NotFound
from cryptocheckout.orders import repository as orders
from cryptocheckout.outbound import repository
from cryptocheckout.outbound.addresses import check_url
from cryptocheckout.outbound.models import WebhookDelivery, WebhookEndpoint
from cryptocheckout.outbound.schemas import EndpointCreate, EndpointUpdate
from cryptocheckout.outbound.signing import new_secret
from cryptocheckout.payments.events import OrderEvent

WEBHOOK_DELIVERY_JOB = "webhook_delivery"
# Waits after each failed attempt, as the Standard Webhooks specification suggests (5 s,
# 5 min, 30 min, 2 h, 5 h, 10 h, 10 h), then 10 h more until about 3 days have passed.
RETRY_SCHEDULE: tuple[timedelta, ...] = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    *(timedelta(hours=10),) * 6,
)
RETRY_JITTER = 0.1  # each wait is drawn from +-10 % of its nominal length
# The first attempt and one per wait; after the last the job is dead (visible to staff).
DELIVERY_ATTEMPTS = len(RETRY_SCHEDULE) + 1
# After a rotation the previous secret keeps signing alongside the new one for this long.
ROTATION_OVERLAP = timedelta(hours=24)


def retry_delay(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failed attempt, with jitter."""
    nominal = RETRY_SCHEDULE[min(max(attempts, 1), len(RETRY_SCHEDULE)) - 1]
    spread = random.uniform(1 - RETRY_JITTER, 1 + RETRY_JITTER)  # noqa: S311 - not security
    return nominal * spread


def webhook_id(event_id: uuid.UUID) -> str:
    """The `webhook-id` of an event: the same on every attempt and every redelivery."""
    return f"msg_{event_id.hex}"


def delivery_key(event_id: uuid.UUID | str, endpoint_id: uuid.UUID | str) -> str:
    return f"{WEBHOOK_DELIVERY_JOB}:{event_id}:{endpoint_id}"


async def react(session: AsyncSession, event: OrderEvent) -> None:
    """The order-event reaction: one delivery job per enabled endpoint that takes the event.

    The message body is fixed now, with the order as it is at the event, so every attempt
    and redelivery sends the same bytes.
    """
    endpoints = [e for e in await repository.enabled_endpoints(session) if e.takes(event.type)]
    if not endpoints:
        return
    order = await orders.get_with_items(session, event.order_id)
    if order is None:
        return
    # Without the delivery link: it opens the customer's keys, and a webhook is no place for it.
    data = (await order_view(session, order, None)).model_dump(mode="json")
    body = json.dumps(
        {"type": event.type.value, "timestamp": event.occurred_at.isoformat(), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )
    for endpoint in endpoints:
        await jobs.enqueue(
            session,
            WEBHOOK_DELIVERY_JOB,
            {
                "event_id": str(event.id),
                "type": event.type.value,
                "endpoint_id": str(endpoint.id),
                "order_id": str(event.order_id),
                "webhook_id": webhook_id(event.id),
                "body": body,
            },
            subject_id=event.order_id,
            dedupe_key=delivery_key(event.id, endpoint.id),
            max_attempts=DELIVERY_ATTEMPTS,
        )


async def create_endpoint(
    session: AsyncSession, data: EndpointCreate, *, allow_private: bool
) -> WebhookEndpoint:
    await check_url(data.url, allow_private=allow_private)
    endpoint = WebhookEndpoint(
        url=data.url,
        events=_event_names(data.events),
        enabled=True,
        description=data.description,
        secret=new_secret(),
    )
    session.add(endpoint)
    await session.flush()
    return endpoint


async def endpoint_or_404(
    session: AsyncSession, endpoint_id: uuid.UUID, *, for_update: bool = False
) -> WebhookEndpoint:
    endpoint = await repository.get_endpoint(session, endpoint_id, for_update=for_update)
    if endpoint is None:
        raise NotFound("webhook endpoint")
    return endpoint


async def update_endpoint(
    session: AsyncSession,
    endpoint_id: uuid.UUID,
    data: EndpointUpdate,
    *,
    allow_private: bool,
) -> WebhookEndpoint:
    endpoint = await endpoint_or_404(session, endpoint_id, for_update=True)
    given = data.model_fields_set
    if data.url is not None:
        await check_url(data.url, allow_private=allow_private)
        endpoint.url = data.url
    if "events" in given:
        endpoint.events = _event_names(data.events)
    if data.description is not None:
        endpoint.description = data.description
    if data.enabled is not None:
        if data.enabled and not endpoint.enabled:
            # Enabled again by staff: the failure clock starts afresh.
            endpoint.failing_since = None
            endpoint.disabled_reason = None
        endpoint.enabled = data.enabled
    endpoint.updated_at = utcnow()
    return endpoint


async def delete_endpoint(session: AsyncSession, endpoint_id: uuid.UUID) -> None:
    # Its attempts go with it (ON DELETE CASCADE); its queued jobs find no endpoint and end.
    await session.delete(await endpoint_or_404(session, endpoint_id, for_update=True))


async def rotate_secret(session: AsyncSession, endpoint_id: uuid.UUID) -> WebhookEndpoint:
    """A new secret; the current one keeps signing alongside it for `ROTATION_OVERLAP`."""
    endpoint = await endpoint_or_404(session, endpoint_id, for_update=True)
    now = utcnow()
    endpoint.previous_secret = endpoint.secret
    endpoint.previous_secret_expires_at = now + ROTATION_OVERLAP
    endpoint.secret = new_secret()
    endpoint.updated_at = now
    return endpoint


async def redeliver(
    session: AsyncSession, endpoint_id: uuid.UUID, delivery_id: uuid.UUID
) -> WebhookDelivery:
    """Queues the attempt's event again for its endpoint: the same event id and webhook-id."""
    endpoint = await endpoint_or_404(session, endpoint_id)
    delivery = await repository.get_delivery(session, endpoint_id, delivery_id)
    if delivery is None:
        raise NotFound("delivery")
    if not endpoint.enabled:
        raise Conflict("The endpoint is disabled: enable it before redelivering.")
    payload = await repository.job_payload(session, delivery_key(delivery.event_id, endpoint.id))
    if payload is None:
        raise NotFound("event")
    await jobs.enqueue(
        session,
        WEBHOOK_DELIVERY_JOB,
        payload,
        subject_id=uuid.UUID(payload["order_id"]),
        max_attempts=DELIVERY_ATTEMPTS,
    )
    return delivery


def _event_names(events: list[Any] | None) -> list[str] | None:
    if events is None:
        return None
    return sorted({str(getattr(event, "value", event)) for event in events})

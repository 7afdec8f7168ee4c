"""Delivery rules: who may see an order's keys, and when a fresh link is mailed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.catalogue.service import DeliveredKey, keys_of_order
from cryptocheckout.delivery import repository
from cryptocheckout.delivery.jobs import enqueue_order_email
from cryptocheckout.delivery.links import DeliveryLinks, LinkInvalid
from cryptocheckout.kit.encryption import KeyRing
from cryptocheckout.kit.errors import NotFound
from cryptocheckout.orders.models import Order, OrderStatus

# One fresh link per order per this interval, whoever asks: the button cannot flood a mailbox.
FRESH_LINK_INTERVAL = timedelta(minutes=5)


class LinkExpired(Exception):
    """A link we signed whose time is up: the page offers a fresh one by e-mail."""

    def __init__(self, order_id: uuid.UUID) -> None:
        super().__init__("delivery link expired")
        self.order_id = order_id


class FreshLinkTooSoon(Exception):
    def __init__(self, retry_after: timedelta) -> None:
        super().__init__("a fresh link was sent a moment ago")
        self.retry_after = retry_after


@dataclass(frozen=True)
class DeliveryPage:
    order_id: uuid.UUID
    expires_at: datetime
    keys: list[DeliveredKey]


async def _delivered_order(session: AsyncSession, order_id: uuid.UUID) -> Order:
    order = await repository.get_order(session, order_id)
    if order is None or order.status is not OrderStatus.FULFILLED:
        # A refunded order's keys are not shown any more; to the visitor it is just unknown.
        raise NotFound("delivery")
    return order


async def open_delivery(
    session: AsyncSession, ring: KeyRing, links: DeliveryLinks, token: str, now: datetime
) -> DeliveryPage:
    """The order's keys for a valid link, counting the view.

    `NotFound` for a link we did not sign or an order that has no keys to show;
    `LinkExpired` for a good link whose time is up.
    """
    try:
        found = links.read(token)
    except LinkInvalid:
        raise NotFound("delivery") from None
    order = await _delivered_order(session, found.order_id)
    if found.expired(now):
        raise LinkExpired(order.id)
    keys = await keys_of_order(session, ring, order.id)
    await repository.count_view(session, order.id, now)
    return DeliveryPage(order_id=order.id, expires_at=found.expires_at, keys=keys)


async def send_fresh_link(session: AsyncSession, order_id: uuid.UUID, now: datetime) -> int:
    """Enqueues a mail with a fresh link to the order's own address; returns its number.

    Each request is its own event (`resend-<n>`), so it is mailed exactly once however
    often its job runs. Staff's "resend e-mail" calls this directly; customers go through
    `request_fresh_link`, which is rate-limited.
    """
    await _delivered_order(session, order_id)
    delivery = await repository.lock_delivery(session, order_id, now)
    delivery.links_requested += 1
    delivery.last_link_requested_at = now
    delivery.updated_at = now
    await session.flush()
    await enqueue_order_email(session, order_id, f"resend-{delivery.links_requested}")
    return delivery.links_requested


async def request_fresh_link(
    session: AsyncSession, links: DeliveryLinks, token: str, now: datetime
) -> None:
    """The customer's "Email me a new link": needs a link we signed (expired or not)."""
    try:
        found = links.read(token)
    except LinkInvalid:
        raise NotFound("delivery") from None
    await _delivered_order(session, found.order_id)
    delivery = await repository.lock_delivery(session, found.order_id, now)
    last = delivery.last_link_requested_at
    if last is not None and now - last < FRESH_LINK_INTERVAL:
        raise FreshLinkTooSoon(FRESH_LINK_INTERVAL - (now - last))
    await send_fresh_link(session, found.order_id, now)

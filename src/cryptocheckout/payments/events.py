"""Order events: what the world outside the payment core hears of an order.

When an order reaches a status that others care about (paid, fulfilled, underpaid, expired,
failed, refunded), the state machine records one `order_event` job in the same transaction
as the change: the job table is the outbox, so an event exists exactly when its cause was
committed, and its dedupe key makes it one per order and type, whatever redeliveries,
replays, workers or admin actions lead there.

The event's handler fans it out to the reactions of the packages above this one (e-mail,
webhooks to the shop's systems), which the worker passes in: each reaction enqueues its own
jobs, with their own dedupe keys, in the handler's transaction. So a reaction runs at most
once per event (its jobs commit with the event's completion) and this package imports none
of them.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.kit import jobs
from cryptocheckout.kit.clock import utcnow
from cryptocheckout.orders.models import Order, OrderStatus

ORDER_EVENT_JOB = "order_event"


class OrderEventType(enum.StrEnum):
    PAID = "order.paid"
    FULFILLED = "order.fulfilled"
    UNDERPAID = "order.underpaid"
    EXPIRED = "order.expired"
    FAILED = "order.failed"
    REFUNDED = "order.refunded"


EVENT_OF_STATUS: dict[OrderStatus, OrderEventType] = {
    OrderStatus.PAID: OrderEventType.PAID,
    OrderStatus.FULFILLED: OrderEventType.FULFILLED,
    OrderStatus.UNDERPAID: OrderEventType.UNDERPAID,
    OrderStatus.EXPIRED: OrderEventType.EXPIRED,
    OrderStatus.FAILED: OrderEventType.FAILED,
    OrderStatus.REFUNDED: OrderEventType.REFUNDED,
}


@dataclass(frozen=True)
class OrderEvent:
    """One event: its id is stable (the same on every retry of whatever it causes)."""

    id: uuid.UUID
    type: OrderEventType
    order_id: uuid.UUID
    occurred_at: datetime

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> OrderEvent:
        return cls(
            id=uuid.UUID(str(payload["event_id"])),
            type=OrderEventType(str(payload["type"])),
            order_id=uuid.UUID(str(payload["order_id"])),
            occurred_at=datetime.fromisoformat(str(payload["occurred_at"])),
        )


async def record_order_event(session: AsyncSession, order: Order, status: OrderStatus) -> bool:
    """In the status change's transaction: the event of `status`, once per order and type.

    False when the status has no event or the order had this event already.
    """
    event_type = EVENT_OF_STATUS.get(status)
    if event_type is None:
        return False
    return await jobs.enqueue(
        session,
        ORDER_EVENT_JOB,
        {
            "event_id": str(uuid.uuid4()),
            "type": event_type.value,
            "order_id": str(order.id),
            "occurred_at": utcnow().isoformat(),
        },
        subject_id=order.id,
        dedupe_key=f"{ORDER_EVENT_JOB}:{event_type.value}:{order.id}",
    )


# A reaction to an order event, run in the event job's transaction: it enqueues its own
# work (one message, one delivery per endpoint) with dedupe keys of its own.
Reaction = Callable[[AsyncSession, OrderEvent], Awaitable[None]]


def order_event_handler(reactions: Sequence[Reaction]) -> jobs.Handler:
    """The `order_event` job's handler, fanning the event out to `reactions`."""

    async def handle(session: AsyncSession, payload: Mapping[str, Any]) -> None:
        event = OrderEvent.from_payload(payload)
        for react in reactions:
            await react(session, event)

    return handle

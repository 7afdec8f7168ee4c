"""Staff's repairs: each goes through the domain's own rules and is recorded, who and why.

`actor` names who acted: a console session's label ("session 1a2b3c4d") or the bearer API.
"""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.admin import repository
from cryptocheckout.admin.models import AdminAction
from cryptocheckout.catalogue import service as catalogue
from cryptocheckout.delivery import service as delivery
from cryptocheckout.fulfilment.handlers import wake_waiting_orders
from cryptocheckout.kit import jobs
from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.encryption import KeyRing
from cryptocheckout.kit.errors import Conflict, FieldIssue, Invalid, NotFound
from cryptocheckout.kit.jobs_models import Job
from cryptocheckout.orders import repository as orders
from cryptocheckout.orders.models import Order, OrderStatus
from cryptocheckout.outbound import service as outbound
from cryptocheckout.outbound.models import WebhookDelivery, WebhookEndpoint
from cryptocheckout.outbound.schemas import EndpointCreate
from cryptocheckout.payments.models import ChangeCause
from cryptocheckout.payments.state_machine import move_order, order_advances

API_ACTOR = "admin API"
MAX_REASON = 500


def record(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    subject: str,
    subject_id: uuid.UUID | None,
    order_id: uuid.UUID | None = None,
    note: str | None = None,
    outcome: str | None = None,
) -> None:
    session.add(
        AdminAction(
            actor=actor,
            action=action,
            subject=subject,
            subject_id=subject_id,
            order_id=order_id,
            note=note or None,
            outcome=outcome[:200] if outcome else None,
        )
    )


def clean_reason(reason: str | None) -> str:
    text = (reason or "").strip()
    if not text:
        raise Invalid("A reason is required.", [FieldIssue(("reason",), "must not be blank")])
    if len(text) > MAX_REASON or any(ord(c) < 32 and c not in "\t\n\r" for c in text):
        raise Invalid(
            "The reason is not valid.",
            [FieldIssue(("reason",), f"at most {MAX_REASON} printable characters")],
        )
    return text


async def mark_paid(
    session: AsyncSession, order_id: uuid.UUID, reason: str | None, *, actor: str
) -> Order:
    """An underpaid or flagged order becomes paid by hand (which enqueues its fulfilment).

    It goes through the one state machine with cause `admin`, the actor as cause_ref and the
    reason as note; the order's flagged payments count as reviewed.
    """
    why = clean_reason(reason)
    order = await orders.lock(session, order_id)
    if order is None:
        raise NotFound("order")
    payments = await repository.payments_of_order(session, order_id)
    flagged = [payment for payment in payments if payment.needs_review]
    payable = order.status is OrderStatus.UNDERPAID or (
        flagged and order_advances(order.status, OrderStatus.PAID)
    )
    if not payable:
        raise Conflict(
            f"The order is {order.status.value}: only underpaid or flagged orders can be paid."
        )
    await move_order(
        session, order, OrderStatus.PAID, cause=ChangeCause.ADMIN, cause_ref=actor, note=why
    )
    for payment in flagged:
        payment.needs_review = False
    record(
        session,
        actor=actor,
        action="mark_paid",
        subject="order",
        subject_id=order.id,
        order_id=order.id,
        note=why,
        outcome=f"{len(flagged)} flagged payment(s) reviewed" if flagged else None,
    )
    return order


async def retry_job(
    session: AsyncSession, job_id: uuid.UUID, *, actor: str, note: str | None = None
) -> Job:
    job = await jobs.retry_dead(session, job_id)
    if job is None:
        raise NotFound("job")
    order_id = (
        await repository.order_id_of_subject(session, job.subject_id) if job.subject_id else None
    )
    record(
        session,
        actor=actor,
        action="retry_job",
        subject="job",
        subject_id=job.id,
        order_id=order_id,
        note=note,
        outcome=f"{job.kind}: {job.status.value}",
    )
    return job


async def import_keys(
    session: AsyncSession, ring: KeyRing, product_id: uuid.UUID, keys: list[str], *, actor: str
) -> tuple[int, int]:
    added, duplicates = await catalogue.add_keys(session, ring, product_id, keys)
    if added:
        await wake_waiting_orders(session)
    # Counts only: licence keys are never written anywhere but their own table.
    record(
        session,
        actor=actor,
        action="import_keys",
        subject="product",
        subject_id=product_id,
        outcome=f"added {added}, duplicates {duplicates}",
    )
    return added, duplicates


async def resend_email(session: AsyncSession, order_id: uuid.UUID, *, actor: str) -> str:
    """A fresh delivery link, mailed to the order's own address; returns the mail's event.

    Each resend is its own event (`resend-<n>`), so it is one message however often its job
    runs; only a fulfilled order has keys to send.
    """
    order = await orders.lock(session, order_id)
    if order is None:
        raise NotFound("order")
    if order.status is not OrderStatus.FULFILLED:
        raise Conflict(
            f"The order is {order.status.value}: only a fulfilled order has keys to send."
        )
    number = await delivery.send_fresh_link(session, order_id, utcnow())
    event = f"resend-{number}"
    record(
        session,
        actor=actor,
        action="resend_email",
        subject="order",
        subject_id=order.id,
        order_id=order.id,
        outcome=f"a fresh delivery link is mailed ({event})",
    )
    return event


async def redeliver_webhook(
    session: AsyncSession, endpoint_id: uuid.UUID, delivery_id: uuid.UUID, *, actor: str
) -> WebhookDelivery:
    """Queues an attempt's event again for its endpoint (same event and webhook-id), recorded."""
    delivery = await outbound.redeliver(session, endpoint_id, delivery_id)
    record(
        session,
        actor=actor,
        action="redeliver_webhook",
        subject="webhook_endpoint",
        subject_id=endpoint_id,
        outcome=f"{delivery.event_type} {delivery.webhook_id} queued again",
    )
    return delivery


async def create_webhook_endpoint(
    session: AsyncSession, data: EndpointCreate, *, allow_private: bool, actor: str
) -> WebhookEndpoint:
    """A new endpoint with a fresh secret (which the caller shows once), recorded."""
    endpoint = await outbound.create_endpoint(session, data, allow_private=allow_private)
    # Neither the secret nor the URL (it may carry a token of the receiving system).
    record(
        session,
        actor=actor,
        action="create_webhook",
        subject="webhook_endpoint",
        subject_id=endpoint.id,
        outcome=f"events: {', '.join(endpoint.events) if endpoint.events else 'every event'}",
    )
    return endpoint

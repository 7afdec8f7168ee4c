"""The order e-mails as jobs: enqueued with their cause, sent by the worker, never doubled.

`enqueue_order_email` is called inside the transaction of the status change that causes the
mail, with the dedupe key `email:{order_id}:{event}`: one job per order and event, whatever
redeliveries, replays, workers or admin actions (a fresh link is its own event,
`resend-<n>`). The handler sends and the job completes in one transaction, so a message is
sent at least once; a crash after the server accepted it and before that commit sends it once
more (at most one duplicate per crash, the window being one SMTP answer to one commit).

A temporary SMTP failure (server down, 4xx) backs off and retries without ever going dead,
so an outage delays mail and never loses it; a permanent refusal (5xx) ends the job dead at
once, with the server's reason in the job's `last_error` for staff.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.delivery import repository
from cryptocheckout.delivery.emails import OrderSummary, Underpayment, event_kind, render
from cryptocheckout.delivery.links import DeliveryLinks
from cryptocheckout.kit import jobs
from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.mail import Mailer, PermanentMailError, TemporaryMailError
from cryptocheckout.kit.money import format_money
from cryptocheckout.orders.models import Order, OrderStatus
from cryptocheckout.payments.events import OrderEvent, OrderEventType
from cryptocheckout.payments.queries import balance_of

SEND_ORDER_EMAIL_JOB = "send_order_email"
# Mail waits out an SMTP outage (RetryLater never dies); this only bounds other failures.
MAIL_MAX_ATTEMPTS = 20


class MailDelayed(jobs.RetryLater):
    """The mail server could not take the message now; the job backs off and tries again."""


class MailRefused(jobs.GiveUp):
    """The mail server refused the message for good; the job is dead with this reason."""


async def enqueue_order_email(
    session: AsyncSession,
    order_id: uuid.UUID,
    event: str,
    *,
    details: Mapping[str, str] | None = None,
) -> bool:
    """In the caller's transaction: the e-mail for `event` of this order, once ever.

    `event` is `fulfilled`, `underpaid`, `expired`, `failed` or `resend-<n>`. `details`
    (strings) go to the template: `missing_in_order_currency` for `underpaid`, e.g.
    "6.25 USD". False when this order's `event` was enqueued before.
    """
    event_kind(event)  # refuse unknown events in the caller's transaction, not later
    return await jobs.enqueue(
        session,
        SEND_ORDER_EMAIL_JOB,
        {"order_id": str(order_id), "event": event, **(details or {})},
        subject_id=order_id,
        dedupe_key=f"email:{order_id}:{event}",
        max_attempts=MAIL_MAX_ATTEMPTS,
    )


async def send_order_email(
    session: AsyncSession,
    payload: Mapping[str, Any],
    *,
    mailer: Mailer,
    links: DeliveryLinks,
    shop_name: str,
    support_email: str = "",
    now: datetime | None = None,
) -> None:
    """Renders and sends one order e-mail (the job's handler, bound by `order_email_handler`)."""
    order_id = uuid.UUID(str(payload["order_id"]))
    event = str(payload["event"])
    kind = event_kind(event)
    order = await repository.get_order(session, order_id)
    if order is None:
        return  # deleted since: nobody to write to
    if kind in ("fulfilled", "resend") and order.status is not OrderStatus.FULFILLED:
        return  # refunded since: the link would show nothing
    now = now or utcnow()
    # The link carries the order's token (the page turns it into a cookie and drops it from
    # the address), so it opens the order in any browser, not only the one that bought.
    context: dict[str, Any] = {
        "order_url": f"{links.order_page_url(order_id)}?token={order.access_token}"
    }
    if kind in ("fulfilled", "resend"):
        context["delivery_url"] = links.url(order_id, now)
        context["expires_at"] = f"{now + links.ttl:%Y-%m-%d %H:%M} UTC"
    if kind == "underpaid":
        context["underpayment"] = await _underpayment(session, order, payload)
    summary = OrderSummary(
        number=str(order.id)[:8],
        items=tuple((item.name, item.quantity) for item in order.items),
        total=f"{format_money(order.total)} {order.currency}",
    )
    mail = render(
        event,
        to=order.email,
        shop_name=shop_name,
        order=summary,
        support_email=support_email,
        **context,
    )
    try:
        await mailer.send(mail)
    except TemporaryMailError as exc:
        raise MailDelayed(str(exc)) from None
    except PermanentMailError as exc:
        raise MailRefused(str(exc)) from None


async def _underpayment(
    session: AsyncSession, order: Order, payload: Mapping[str, Any]
) -> Underpayment | None:
    payment = await repository.latest_payment(session, order.id)
    if payment is None or payment.actually_paid is None or payment.pay_amount is None:
        return None
    missing = payload.get("missing_in_order_currency")
    if not missing:
        # What is still due by the order's balance, at the time of sending.
        due = (await balance_of(session, order)).due
        missing = f"{format_money(due)} {order.currency}" if due > 0 else None
    return Underpayment(
        paid=payment.actually_paid,
        expected=payment.pay_amount,
        pay_currency=(payment.pay_currency or "").upper(),
        missing_in_order_currency=str(missing) if missing else None,
    )


def order_email_handler(
    mailer: Mailer, links: DeliveryLinks, shop_name: str, support_email: str = ""
) -> jobs.Handler:
    """The `send_order_email` job's handler, for the worker's table of handlers."""

    async def handler(session: AsyncSession, payload: Mapping[str, Any]) -> None:
        await send_order_email(
            session,
            payload,
            mailer=mailer,
            links=links,
            shop_name=shop_name,
            support_email=support_email,
        )

    return handler


# Which order events the customer hears of by e-mail (paid: the keys follow at once).
EMAIL_OF_EVENT: dict[OrderEventType, str] = {
    OrderEventType.FULFILLED: "fulfilled",
    OrderEventType.UNDERPAID: "underpaid",
    OrderEventType.EXPIRED: "expired",
    OrderEventType.FAILED: "failed",
}


async def email_on_order_event(session: AsyncSession, event: OrderEvent) -> None:
    """The reaction to an order event (`payments/events.py`): its e-mail, once per order."""
    kind = EMAIL_OF_EVENT.get(event.type)
    if kind is not None:
        await enqueue_order_email(session, event.order_id, kind)

"""What the console shows, worked out from the rows: amounts, one timeline, likely causes.

Pure functions of what the repository loaded; no SQL and no HTTP here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from cryptocheckout.admin.models import AdminAction
from cryptocheckout.kit.jobs_models import Job
from cryptocheckout.kit.money import format_money
from cryptocheckout.orders.models import Order, OrderStatus
from cryptocheckout.payments.models import Payment, StatusChange
from cryptocheckout.payments.state_machine import order_advances
from cryptocheckout.webhooks.models import WebhookLog

CENTS = Decimal("0.01")


def fiat(amount: Decimal | None) -> str:
    """An amount in the order's currency for the eye: to the cent, half up. Display only:
    stored amounts, data-* attributes and every comparison keep the exact value."""
    if amount is None:
        return ""
    return format_money(amount.quantize(CENTS, rounding=ROUND_HALF_UP))


def parse_uuid(text: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(text or "")
    except ValueError:
        return None


# Signature failures within the last hour from which the home page blames the IPN secret.
SIGNATURE_ALARM = 3


def pretty_json(raw: str) -> str:
    """A notification's body indented for reading (the exact bytes are shown beside it)."""
    try:
        return json.dumps(json.loads(raw), indent=2, ensure_ascii=False, sort_keys=True)
    except ValueError:
        return raw


@dataclass(frozen=True)
class RejectedSummary:
    reason: str
    count: int
    likely_cause: str


def likely_cause(reason: str, count: int) -> str:
    if reason == "invalid signature":
        if count >= SIGNATURE_ALARM:
            return (
                "Many deliveries fail the signature check: NOWPAYMENTS_IPN_SECRET is most "
                "likely not the IPN secret of the NOWPayments dashboard (or it was changed there)."
            )
        return "A few bad signatures: probes from the internet, or a secret changed just now."
    if reason == "missing signature":
        return "Posts without x-nowpayments-sig: not NOWPayments (a probe or a wrong client)."
    return "Malformed bodies: not NOWPayments' notifications, or a proxy altering them."


@dataclass(frozen=True)
class Amounts:
    """What a payment should bring and what arrived, in its coin and in the order's currency."""

    expected: Decimal | None
    paid: Decimal
    coin: str
    price: Decimal
    currency: str
    credited: Decimal | None
    missing: Decimal | None
    over: Decimal | None


def amounts_of(payment: Payment) -> Amounts:
    paid = payment.actually_paid or Decimal(0)
    credited = missing = over = None
    if payment.pay_amount:
        # What arrived, in the order's currency: the contract's credit, exact to 8 places.
        credited = (paid / payment.pay_amount * payment.price_amount).quantize(Decimal("1e-8"))
        difference = payment.price_amount - credited
        missing = difference if difference > 0 else None
        over = -difference if difference < 0 else None
    return Amounts(
        expected=payment.pay_amount,
        paid=paid,
        coin=(payment.pay_currency or "").upper(),
        price=payment.price_amount,
        currency=payment.price_currency,
        credited=credited,
        missing=missing,
        over=over,
    )


@dataclass(frozen=True)
class Entry:
    """One line of a timeline: a notification, a status change, a job or a staff action."""

    at: datetime
    kind: str
    title: str
    text: str = ""
    link: str | None = None
    body: str | None = None


def timeline(
    changes: Sequence[StatusChange],
    notifications: Sequence[WebhookLog],
    jobs: Sequence[Job],
    actions: Sequence[AdminAction],
) -> list[Entry]:
    entries: list[Entry] = []
    for note in notifications:
        text = f"{note.status.value}"
        if note.deliveries > 1:
            text += f", delivered {note.deliveries} times"
        if note.error:
            text += f": {note.error}"
        entries.append(
            Entry(
                note.created_at,
                "notification",
                f"Notification {note.provider_status or '?'} (payment {note.external_id})",
                text,
                f"/admin/webhook-logs/{note.id}",
                pretty_json(note.raw_body),
            )
        )
    for change in changes:
        cause = change.cause.value + (f" by {change.cause_ref}" if change.cause_ref else "")
        if change.cause.value == "notification" and change.cause_ref:
            cause = "notification"
        entries.append(
            Entry(
                change.created_at,
                "status",
                f"{change.subject.capitalize()} {change.from_status or '-'} → {change.to_status}",
                f"cause {cause}" + (f"; note: {change.note}" if change.note else ""),
                f"/admin/webhook-logs/{change.cause_ref}"
                if change.cause.value == "notification" and parse_uuid(change.cause_ref)
                else None,
            )
        )
    for job in jobs:
        text = f"{job.status.value}, attempt {job.attempts} of {job.max_attempts}"
        if job.last_error:
            text += f"; last error: {job.last_error}"
        entries.append(Entry(job.created_at, "job", f"Job {job.kind}", text, "/admin/jobs"))
    for action in actions:
        text = f"by {action.actor}"
        if action.note:
            text += f"; reason: {action.note}"
        if action.outcome:
            text += f"; {action.outcome}"
        entries.append(
            Entry(action.created_at, "action", f"Staff: {action.action.replace('_', ' ')}", text)
        )
    # Within one moment (one transaction), cause before effect: what arrived, what changed,
    # who acted, what was queued.
    rank = {"notification": 0, "action": 1, "status": 2, "job": 3}
    entries.sort(key=lambda entry: (entry.at, rank[entry.kind]))
    return entries


def can_mark_paid(order: Order, payments: Sequence[Payment]) -> bool:
    flagged = any(payment.needs_review for payment in payments)
    return order.status is OrderStatus.UNDERPAID or (
        flagged and order_advances(order.status, OrderStatus.PAID)
    )

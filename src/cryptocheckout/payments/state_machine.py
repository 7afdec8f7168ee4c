"""The one state machine of payments and orders.

Every status change of a payment or an order goes through `move_payment` / `move_order`:
nothing else assigns `.status`. Statuses only move forward, in the order of the contract:

    created < waiting < {expired, failed} < confirming < confirmed < underpaid
            < finished/paid < fulfilled < refunded

so a stale `waiting` after `paid` changes nothing, a late `finished` after `expired` still
pays, and an underpayment completed by hand becomes paid. A move that would not go forward
is refused quietly (the caller still counts the notification as processed). Each change is
written to the audit trail with its cause, and an order that becomes paid gets its
fulfilment job in the same transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.kit import jobs
from cryptocheckout.orders.models import Order, OrderStatus
from cryptocheckout.payments.events import record_order_event
from cryptocheckout.payments.models import ChangeCause, Payment, PaymentStatus, StatusChange

FULFIL_ORDER_JOB = "fulfil_order"

PAYMENT_RANK: dict[PaymentStatus, int] = {
    PaymentStatus.CREATED: 0,
    PaymentStatus.WAITING: 1,
    PaymentStatus.EXPIRED: 2,
    PaymentStatus.FAILED: 2,
    PaymentStatus.CONFIRMING: 3,
    PaymentStatus.CONFIRMED: 4,
    PaymentStatus.UNDERPAID: 5,
    PaymentStatus.FINISHED: 6,
    PaymentStatus.REFUNDED: 8,
}

ORDER_RANK: dict[OrderStatus, int] = {
    OrderStatus.CREATED: 0,
    OrderStatus.WAITING: 1,
    OrderStatus.EXPIRED: 2,
    OrderStatus.FAILED: 2,
    OrderStatus.CONFIRMING: 3,
    OrderStatus.UNDERPAID: 5,
    OrderStatus.PAID: 6,
    OrderStatus.FULFILLED: 7,
    OrderStatus.REFUNDED: 8,
}


@dataclass(frozen=True)
class Outcome:
    payment: PaymentStatus
    order: OrderStatus


UNDERPAID = Outcome(PaymentStatus.UNDERPAID, OrderStatus.UNDERPAID)
PAID = Outcome(PaymentStatus.FINISHED, OrderStatus.PAID)

# What each NOWPayments status means for us. `finished` maps to PAID only once the amounts
# check out (see `judge_finished`); `confirmed`/`sending` never pay (a known bug class).
PROVIDER_OUTCOMES: dict[str, Outcome] = {
    "waiting": Outcome(PaymentStatus.WAITING, OrderStatus.WAITING),
    "confirming": Outcome(PaymentStatus.CONFIRMING, OrderStatus.CONFIRMING),
    "confirmed": Outcome(PaymentStatus.CONFIRMED, OrderStatus.CONFIRMING),
    "sending": Outcome(PaymentStatus.CONFIRMED, OrderStatus.CONFIRMING),
    "finished": PAID,
    "partially_paid": UNDERPAID,
    "expired": Outcome(PaymentStatus.EXPIRED, OrderStatus.EXPIRED),
    "failed": Outcome(PaymentStatus.FAILED, OrderStatus.FAILED),
    "cancelled": Outcome(PaymentStatus.FAILED, OrderStatus.FAILED),
    "refunded": Outcome(PaymentStatus.REFUNDED, OrderStatus.REFUNDED),
}


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    review_reason: str | None = None


def judge_finished(
    *,
    expected_price: Decimal,
    expected_currency: str,
    price_amount: Decimal | None,
    price_currency: str | None,
    expected_pay_amount: Decimal | None,
    expected_pay_currency: str | None,
    pay_currency: str | None,
    actually_paid: Decimal | None,
    tolerance_percent: Decimal,
) -> Verdict:
    """A `finished` pays only when the price is ours and enough arrived.

    The price and its currency must be exactly what we asked for (anything else is a
    conflict held for staff). `actually_paid` short of the pay amount by more than the
    tolerance_percent is an underpayment; above it the order is paid and flagged as overpaid.
    """
    if price_amount is None or price_currency is None:
        return Verdict(UNDERPAID, "finished notification without price_amount/price_currency")
    if price_amount != expected_price or price_currency.lower() != expected_currency.lower():
        return Verdict(
            UNDERPAID,
            f"price conflict: notified {price_amount} {price_currency}, "
            f"expected {expected_price} {expected_currency}",
        )
    if (
        expected_pay_currency is not None
        and pay_currency is not None
        and pay_currency.lower() != expected_pay_currency.lower()
    ):
        return Verdict(
            UNDERPAID,
            f"pay currency conflict: notified {pay_currency}, expected {expected_pay_currency}",
        )
    if actually_paid is None or expected_pay_amount is None:
        return Verdict(UNDERPAID, "finished notification without actually_paid/pay_amount")
    if actually_paid < expected_pay_amount - allowed_shortfall(
        expected_pay_amount, tolerance_percent
    ):
        return Verdict(
            UNDERPAID, f"underpaid: {actually_paid} of {expected_pay_amount} {pay_currency}"
        )
    if actually_paid > expected_pay_amount:
        return Verdict(PAID, f"overpaid: {actually_paid} of {expected_pay_amount} {pay_currency}")
    return Verdict(PAID)


def allowed_shortfall(pay_amount: Decimal, tolerance_percent: Decimal) -> Decimal:
    """How much less than `pay_amount` still pays: `tolerance_percent` of it, exact."""
    return pay_amount * tolerance_percent / 100


def payment_advances(current: PaymentStatus, target: PaymentStatus) -> bool:
    return PAYMENT_RANK[target] > PAYMENT_RANK[current]


def order_advances(current: OrderStatus, target: OrderStatus) -> bool:
    return ORDER_RANK[target] > ORDER_RANK[current]


@dataclass(frozen=True)
class Cause:
    """What caused a change, for the audit trail."""

    kind: ChangeCause
    ref: str | None = None
    note: str | None = None


def _record(
    session: AsyncSession,
    subject: str,
    subject_id: uuid.UUID,
    order_id: uuid.UUID,
    from_status: str,
    to_status: str,
    cause: Cause,
) -> None:
    session.add(
        StatusChange(
            subject=subject,
            subject_id=subject_id,
            order_id=order_id,
            from_status=from_status,
            to_status=to_status,
            cause=cause.kind,
            cause_ref=cause.ref,
            note=cause.note,
        )
    )


async def move_payment(
    session: AsyncSession,
    payment: Payment,
    target: PaymentStatus,
    *,
    cause: ChangeCause,
    cause_ref: str | None = None,
    note: str | None = None,
) -> bool:
    """Moves the payment forward to `target`; False (and no change) if that is not forward."""
    if not payment_advances(payment.status, target):
        return False
    why = Cause(cause, cause_ref, note)
    _record(session, "payment", payment.id, payment.order_id, payment.status, target, why)
    payment.status = target
    return True


async def move_order(
    session: AsyncSession,
    order: Order,
    target: OrderStatus,
    *,
    cause: ChangeCause,
    cause_ref: str | None = None,
    note: str | None = None,
) -> bool:
    """Moves the order forward, in this transaction: its event (`payments/events.py`) and, on
    `paid`, its one fulfilment job."""
    if not order_advances(order.status, target):
        return False
    _record(
        session, "order", order.id, order.id, order.status, target, Cause(cause, cause_ref, note)
    )
    order.status = target
    await record_order_event(session, order, target)
    if target is OrderStatus.PAID:
        await jobs.enqueue(
            session,
            FULFIL_ORDER_JOB,
            {"order_id": str(order.id)},
            subject_id=order.id,
            dedupe_key=f"{FULFIL_ORDER_JOB}:{order.id}",
        )
    return True

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

Money decides from the order's balance: each provider payment credits its order by what
actually arrived, in the order's currency (`credit_of`, one rounding rule: exact, then cut
down to eight decimals), raised only forward (`credit_payment`, audited as a `credit` row of
the trail). The order is paid when its credits reach its total less the tolerance
(`order_target`), whichever of its payments brought them there.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal, localcontext

from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.catalogue import repository as catalogue
from cryptocheckout.kit import jobs
from cryptocheckout.kit.money import MAX_MONEY, MONEY_QUANTUM
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

# From here on an order needs no more money: paid, fulfilled, refunded.
PAID_RANK = ORDER_RANK[OrderStatus.PAID]


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
    # Whether the money of this notification may credit the order: not when its price or
    # currencies are not ours (then its actually_paid is not a share of our price).
    creditable: bool = True


def price_conflict(
    *,
    expected_price: Decimal,
    expected_currency: str,
    price_amount: Decimal | None,
    price_currency: str | None,
    expected_pay_currency: str | None,
    pay_currency: str | None,
) -> str | None:
    """Why the notified price or currencies are not the ones we asked for, if they are not."""
    if price_amount is None or price_currency is None:
        return "notification without price_amount/price_currency"
    if price_amount != expected_price or price_currency.lower() != expected_currency.lower():
        return (
            f"price conflict: notified {price_amount} {price_currency}, "
            f"expected {expected_price} {expected_currency}"
        )
    if (
        expected_pay_currency is not None
        and pay_currency is not None
        and pay_currency.lower() != expected_pay_currency.lower()
    ):
        return f"pay currency conflict: notified {pay_currency}, expected {expected_pay_currency}"
    return None


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
    """Whether a `finished` payment is itself fully paid (its own status).

    The price and its currency must be exactly what we asked for (anything else is a
    conflict held for staff, and credits nothing). `actually_paid` short of the pay amount by
    more than the tolerance_percent is an underpayment. Whether the *order* is paid is decided
    from its balance (`order_target`); an excess over the order's total is flagged there.
    """
    conflict = price_conflict(
        expected_price=expected_price,
        expected_currency=expected_currency,
        price_amount=price_amount,
        price_currency=price_currency,
        expected_pay_currency=expected_pay_currency,
        pay_currency=pay_currency,
    )
    if conflict is not None:
        return Verdict(UNDERPAID, conflict, creditable=False)
    if actually_paid is None or expected_pay_amount is None:
        return Verdict(UNDERPAID, "finished notification without actually_paid/pay_amount")
    if actually_paid < expected_pay_amount - allowed_shortfall(
        expected_pay_amount, tolerance_percent
    ):
        return Verdict(
            UNDERPAID, f"underpaid: {actually_paid} of {expected_pay_amount} {pay_currency}"
        )
    return Verdict(PAID)


def allowed_shortfall(pay_amount: Decimal, tolerance_percent: Decimal) -> Decimal:
    """How much less than `pay_amount` still pays: `tolerance_percent` of it, exact."""
    return pay_amount * tolerance_percent / 100


# The one rounding rule of credits: computed exactly (100 significant digits, every step
# rounded down), then cut to the money columns' eight decimals, ROUND_DOWN. A credit is never
# rounded in the customer's favour, never passes through float, and never uses the
# provider's actually_paid_at_fiat.
CREDIT_ROUNDING = ROUND_DOWN


def credit_of(actually_paid: Decimal, pay_amount: Decimal, price_amount: Decimal) -> Decimal:
    """What a payment credits its order: actually_paid / pay_amount x price_amount."""
    if actually_paid <= 0 or pay_amount <= 0:
        return Decimal(0).quantize(MONEY_QUANTUM)
    with localcontext() as ctx:
        ctx.prec = 100
        ctx.rounding = CREDIT_ROUNDING
        exact = actually_paid * price_amount / pay_amount
        return min(exact, MAX_MONEY).quantize(MONEY_QUANTUM, rounding=CREDIT_ROUNDING)


def amount_required(total: Decimal, tolerance_percent: Decimal) -> Decimal:
    """The credits that pay an order: its total less `tolerance_percent` of it, cut to eight
    decimals like the credits themselves (so one payment within the tolerance of its quote
    always pays an order of its price)."""
    with localcontext() as ctx:
        ctx.prec = 100
        required = total - allowed_shortfall(total, tolerance_percent)
        return required.quantize(MONEY_QUANTUM, rounding=CREDIT_ROUNDING)


def order_target(
    credits: Decimal, total: Decimal, tolerance_percent: Decimal, *, credited_payments: int = 1
) -> OrderStatus:
    """What money on an order makes it: paid once its credits reach what is required.

    Each credit is cut down to eight decimals, so n credits may sum to up to n units of the
    eighth decimal less than the money that arrived: two payments of exactly half the price
    each sum to 0.00000001 short. Paid iff the credits reach the requirement less one unit
    per credit beyond the first, which is exactly "the uncut credits reach the total less the
    tolerance" (the first credit's cut is already absorbed by cutting the requirement).
    """
    slack = MONEY_QUANTUM * max(credited_payments - 1, 0)
    if credits + slack >= amount_required(total, tolerance_percent):
        return OrderStatus.PAID
    return OrderStatus.UNDERPAID


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
    from_status: str | None,
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
    if target is OrderStatus.REFUNDED:
        await catalogue.release_holds_of(session, order.id)
    if target is OrderStatus.PAID:
        # Paid: its held keys are its own until fulfilment assigns them.
        await catalogue.keep_holds(session, order.id)
        await jobs.enqueue(
            session,
            FULFIL_ORDER_JOB,
            {"order_id": str(order.id)},
            subject_id=order.id,
            dedupe_key=f"{FULFIL_ORDER_JOB}:{order.id}",
        )
    return True


async def credit_payment(
    session: AsyncSession,
    payment: Payment,
    amount: Decimal,
    *,
    cause: ChangeCause,
    cause_ref: str | None = None,
    note: str | None = None,
) -> Decimal:
    """Raises the payment's credit to `amount`; returns by how much (0: not forward, no change).

    A credit only grows (NOWPayments' actually_paid is what arrived so far on the payment, so
    a smaller one is an older notification). Each change is a `credit` row of the audit trail.
    """
    raised = amount - payment.credit
    if raised <= 0:
        return Decimal(0)
    text = f"credit {payment.credit:f} -> {amount:f} {payment.price_currency}"
    _record(
        session,
        "credit",
        payment.id,
        payment.order_id,
        None,
        "credited",
        Cause(cause, cause_ref, f"{text}: {note}" if note else text),
    )
    payment.credit = amount
    return raised

"""Applying what NOWPayments says of a payment to the payment and its order.

The state comes from a verified notification (`webhooks/processor.py`, which parses the
stored body) or from the provider's API (`payments/reconcile.py`). Called inside the
caller's transaction; the caller records the result.
"""

from __future__ import annotations

import enum
import logging
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.catalogue import repository as catalogue
from cryptocheckout.kit import jobs
from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.money import truncate_money
from cryptocheckout.nowpayments.models import PaymentInfo
from cryptocheckout.orders import repository as orders
from cryptocheckout.orders.models import Order, OrderStatus
from cryptocheckout.payments import repository
from cryptocheckout.payments.models import ChangeCause, Payment, PaymentStatus
from cryptocheckout.payments.service import ABANDON_AFTER
from cryptocheckout.payments.state_machine import (
    ORDER_RANK,
    PAID,
    PROVIDER_OUTCOMES,
    UNDERPAID,
    Verdict,
    credit_of,
    credit_payment,
    judge_finished,
    move_order,
    move_payment,
    order_target,
    price_conflict,
)

logger = logging.getLogger("cryptocheckout.payments")


# The job that confirms an unknown payment for one of our orders at NOWPayments and adopts it.
ADOPT_PAYMENT_JOB = "adopt_payment"


class Result(enum.Enum):
    PROCESSED = "processed"
    FAILED = "failed"
    RETRY = "retry"


@dataclass(frozen=True)
class Applied:
    result: Result
    detail: str | None = None
    payment_id: str | None = None


def _failed(detail: str) -> Applied:
    return Applied(Result.FAILED, detail)


async def apply_provider_state(
    session: AsyncSession,
    info: PaymentInfo,
    *,
    tolerance_percent: Decimal,
    cause: ChangeCause,
    ref: str,
    raw_payload: dict[str, Any],
) -> Applied:
    """Applies what NOWPayments says of a payment (a notification, or a status poll)."""
    outcome = PROVIDER_OUTCOMES.get(info.status)
    if outcome is None:
        return _failed(f"unknown payment_status {info.status!r}")

    found = await _find_payment(session, info)
    if isinstance(found, Applied):
        return found
    order = await orders.lock(session, found.order_id)
    if order is None:  # pragma: no cover - cascade deletes payments with their order
        return _failed("the payment's order is gone")
    payment = await repository.lock_payment(session, found.id)
    if payment.external_id not in (None, info.payment_id):
        # Another worker linked this invoice's payment to another payment id while we
        # waited for the lock: this notification is for a further payment of the invoice.
        found = await _find_payment(session, info)
        if isinstance(found, Applied):
            return found
        payment = await repository.lock_payment(session, found.id)
    if info.order_id is not None and info.order_id != str(payment.order_id):
        # Signed, and naming our payment, but another order: nothing of it is ours to apply.
        reason = (
            f"a notification of payment {info.payment_id} names order {info.order_id}, "
            f"but the payment is order {payment.order_id}'s: not applied"
        )
        _flag(payment, reason)
        return _failed(reason)
    if payment.external_id is None:
        payment.external_id = info.payment_id  # an invoice learns its payment id here
    if payment.invoice_id is None and info.invoice_id is not None:
        payment.invoice_id = info.invoice_id  # an adopted invoice whose answer was lost

    verdict = Verdict(outcome)
    if outcome == PAID:
        verdict = judge_finished(
            expected_price=payment.price_amount,
            expected_currency=payment.price_currency,
            price_amount=info.price_amount,
            price_currency=info.price_currency,
            expected_pay_amount=_expected_pay_amount(payment, info),
            expected_pay_currency=payment.pay_currency,
            pay_currency=info.pay_currency,
            actually_paid=info.actually_paid,
            tolerance_percent=tolerance_percent,
        )
    elif outcome == UNDERPAID:
        conflict = price_conflict(
            expected_price=payment.price_amount,
            expected_currency=payment.price_currency,
            price_amount=info.price_amount,
            price_currency=info.price_currency,
            expected_pay_currency=payment.pay_currency,
            pay_currency=info.pay_currency,
        )
        if conflict is not None:
            verdict = Verdict(UNDERPAID, conflict, creditable=False)
    note = f"NOWPayments: {info.status}"
    moved = await move_payment(
        session, payment, verdict.outcome.payment, cause=cause, cause_ref=ref, note=note
    )
    if moved:
        _record_provider_fields(payment, info, raw_payload)
        if verdict.review_reason:
            _flag(payment, verdict.review_reason)
    order_moved = False
    if verdict.outcome in (PAID, UNDERPAID):
        # Money that is final (finished, partially_paid) credits the order; the order's
        # status follows its balance, whichever of its payments brought it there.
        settled = ORDER_RANK[order.status] >= ORDER_RANK[OrderStatus.PAID]
        raised = Decimal(0)
        if verdict.creditable:
            raised = await _credit(session, payment, info, cause=cause, ref=ref)
        balance, credited_payments = await repository.credited(session, order.id)
        order_moved = await move_order(
            session,
            order,
            order_target(
                balance, order.total, tolerance_percent, credited_payments=credited_payments
            ),
            cause=cause,
            cause_ref=ref,
            note=f"{note}; credits {balance} of {order.total} {order.currency}",
        )
        if order_moved and order.status is OrderStatus.PAID and await _hold_lapsed(session, order):
            _flag(
                payment,
                "paid after its stock hold lapsed: keys are assigned if free, "
                "else the order waits for stock",
            )
        excess = balance - order.total
        if raised > 0 and settled and excess > 0:
            # Paid again (a second payment, a repeated deposit, money after the order was
            # marked paid): credited, never a second fulfilment, and staff must know.
            _flag(
                payment,
                f"money arrived after the order was already {order.status.value}: "
                f"credited {raised:f}, credits {balance:f} of {order.total:f} {order.currency}, "
                f"overpaid by {max(excess, Decimal(0)):f} {order.currency}",
            )
        elif raised > 0 and excess > 0:
            _flag(
                payment,
                f"overpaid: credits {balance:f} of {order.total:f} {order.currency}, "
                f"overpaid by {excess:f} {order.currency}",
            )
    elif not await _superseded(session, payment):
        order_moved = await move_order(
            session, order, verdict.outcome.order, cause=cause, cause_ref=ref, note=note
        )
    if moved or order_moved:
        return Applied(Result.PROCESSED, payment_id=str(payment.id))
    # A stale or repeated status: run through the state machine, changed nothing. (An exact
    # redelivery never gets here: it is counted on its original log row at the endpoint.)
    return Applied(Result.PROCESSED, "no change: stale or repeated status", str(payment.id))


async def _credit(
    session: AsyncSession, payment: Payment, info: PaymentInfo, *, cause: ChangeCause, ref: str
) -> Decimal:
    """Credits the order with what arrived on this payment (forward only); by how much."""
    pay_amount = _expected_pay_amount(payment, info)
    if info.actually_paid is None or not pay_amount:
        return Decimal(0)
    amount = credit_of(info.actually_paid, pay_amount, payment.price_amount)
    raised = await credit_payment(
        session,
        payment,
        amount,
        cause=cause,
        cause_ref=ref,
        note=f"{info.actually_paid} of {pay_amount} {info.pay_currency or payment.pay_currency} "
        f"x {payment.price_amount} (NOWPayments: {info.status})",
    )
    if raised > 0:
        paid = truncate_money(info.actually_paid)
        if payment.actually_paid is None or paid > payment.actually_paid:
            payment.actually_paid = paid
        await session.flush()
    return raised


async def _hold_lapsed(session: AsyncSession, order: Order) -> bool:
    """Whether the order holds fewer keys than it bought (its holds lapsed and were released)."""
    held = await catalogue.held_for(session, order.id)
    wanted = await orders.quantities(session, order.id)
    return any(held.get(product_id, 0) < quantity for product_id, quantity in wanted.items())


async def _superseded(session: AsyncSession, payment: Payment) -> bool:
    """Whether the order has another open payment (the customer switched coin or asked
    again): that this one expired, failed or is confirming is not the order's news any more.
    Money that arrived on it still counts (it pays, or leaves the order underpaid)."""
    current = await repository.open_for_order(session, payment.order_id)
    return current is not None and current.id != payment.id


def _expected_pay_amount(payment: Payment, info: PaymentInfo) -> Decimal | None:
    """What the customer had to send, as exactly as we know it.

    The stored pay amount is cut to eight decimals; when the (signed) notification's own
    pay amount cuts to the same value, it is the same quote with all its digits.
    """
    if info.pay_amount is not None and (
        payment.pay_amount is None or truncate_money(info.pay_amount) == payment.pay_amount
    ):
        return info.pay_amount
    return payment.pay_amount


def _record_provider_fields(
    payment: Payment, info: PaymentInfo, raw_payload: dict[str, Any]
) -> None:
    payment.provider_status = info.status
    payment.raw_payload = raw_payload
    if info.actually_paid is not None:
        payment.actually_paid = truncate_money(info.actually_paid)
    if payment.pay_amount is None and info.pay_amount is not None:
        payment.pay_amount = truncate_money(info.pay_amount)
    if payment.pay_currency is None and info.pay_currency:
        payment.pay_currency = info.pay_currency[:20]
    if payment.pay_address is None and info.pay_address:
        payment.pay_address = info.pay_address[:256]
    if payment.purchase_id is None and info.purchase_id:
        payment.purchase_id = str(info.purchase_id)[:64]


def _flag(payment: Payment, reason: str) -> None:
    payment.needs_review = True
    payment.review_reason = (
        reason if not payment.review_reason else f"{payment.review_reason}; {reason}"
    )


async def _find_payment(session: AsyncSession, info: PaymentInfo) -> Payment | Applied:
    payment = await repository.by_external_id(session, info.payment_id)
    if payment is not None:
        return payment
    if info.parent_payment_id is not None:
        parent = await repository.by_external_id(session, info.parent_payment_id)
        if parent is None:
            return await _unknown(
                session, info, f"repeated deposit of unknown payment {info.parent_payment_id}"
            )
        return await _child(
            session, parent, info, f"repeated deposit of payment {parent.external_id}"
        )
    if info.invoice_id is not None:
        invoice_payment = await repository.by_invoice_id(session, info.invoice_id)
        if invoice_payment is not None:
            if info.order_id is not None and info.order_id != str(invoice_payment.order_id):
                # We sent our order id with the invoice: a mismatch is not ours to apply.
                return _failed(
                    f"invoice {info.invoice_id} is order {invoice_payment.order_id}'s, "
                    f"but the notification names order {info.order_id}"
                )
            if invoice_payment.external_id is None:
                return invoice_payment
            return await _child(
                session, invoice_payment, info, f"another payment on invoice {info.invoice_id}"
            )
    return await _unknown(session, info, f"unknown payment {info.payment_id}")


async def _unknown(session: AsyncSession, info: PaymentInfo, reason: str) -> Payment | Applied:
    adopted = await repository.unconfirmed_create(session, info.order_id)
    if adopted is not None:
        # We asked NOWPayments for this payment, the call timed out and we could not know
        # whether it was created: it was. The notification names it; take it back.
        return adopted
    order_id = _our_uuid(info.order_id)
    if order_id is None or not await orders.exists(session, info.order_id):
        return _failed(reason)
    if not await repository.creation_in_flight(session, order_id, since=utcnow() - ABANDON_AFTER):
        # No create call of ours can still be running: NOWPayments made a payment for our
        # order whose answer we never recorded (the process died in between). Once the API
        # confirms it, it is adopted (`payments/reconcile.py`) and this notification applies.
        await jobs.enqueue(
            session,
            ADOPT_PAYMENT_JOB,
            {"external_id": info.payment_id, "order_id": str(order_id)},
            subject_id=order_id,
            dedupe_key=f"{ADOPT_PAYMENT_JOB}:{info.payment_id}",
            max_attempts=5,
        )
        return Applied(Result.RETRY, f"{reason} (order {order_id} is ours; confirming it)")
    # Our own order id on an unknown payment while a create call may still be running: its
    # answer has not committed yet (NOWPayments can notify before), so try again shortly.
    return Applied(Result.RETRY, f"{reason} (order {order_id} is ours; retrying)")


def _our_uuid(order_id: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(order_id or "")
    except ValueError:
        return None


async def _child(
    session: AsyncSession, sibling: Payment, info: PaymentInfo, reason: str
) -> Payment:
    """A further payment of the same order: recorded on its own row, flagged for staff.

    Checked against the amounts of the payment it follows, so it pays an order only if the
    order is not paid yet and the money is right; the order's forward-only status and the
    one fulfilment job per order make a second fulfilment impossible. It has
    `parent_external_id` set, so it never counts as the order's one open payment.
    """
    # A repeated deposit goes to the same address in the same coin as its parent, so it is
    # held to the parent's quote; another payment on an invoice may be in another coin, and
    # its own (signed) quote applies. The price is always the parent's: our order's total.
    repeat = info.parent_payment_id is not None
    # The order first, as everywhere: inserting the child takes a share lock on its order
    # (the foreign key), and two workers holding that while both wait to lock the order for
    # update would deadlock.
    await orders.lock(session, sibling.order_id)
    child = Payment(
        order_id=sibling.order_id,
        kind=sibling.kind,
        external_id=info.payment_id,
        invoice_id=info.invoice_id or sibling.invoice_id,
        parent_external_id=info.parent_payment_id or sibling.external_id,
        status=PaymentStatus.CREATED,
        price_amount=sibling.price_amount,
        price_currency=sibling.price_currency,
        pay_amount=sibling.pay_amount if repeat else None,
        pay_currency=sibling.pay_currency if repeat else None,
        pay_address=(info.pay_address or "")[:256] or None,
        needs_review=True,
        review_reason=reason,
    )
    session.add(child)
    await session.flush()
    return child

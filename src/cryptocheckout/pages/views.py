"""What the order page shows: the order's state kind, its payment, what arrived and what is due.

The status poll and the page derive the state from the same function, so the page's script
knows when what it shows is out of date.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from cryptocheckout.orders.models import Order, OrderStatus
from cryptocheckout.payments.models import (
    OPEN_PAYMENT_STATUSES,
    Payment,
    PaymentKind,
    PaymentStatus,
)
from cryptocheckout.payments.queries import order_balance


class Kind(enum.StrEnum):
    CHOOSE = "choose"  # nothing open: pick a coin or the hosted invoice
    PAYING = "paying"  # a direct payment waits for the coins
    INVOICE = "invoice"  # an invoice waits on NOWPayments' page
    CONFIRMING = "confirming"  # seen on chain, not final yet
    UNDERPAID = "underpaid"
    RETRY = "retry"  # expired or failed with nothing paid
    PAID = "paid"  # paid, keys on their way
    FULFILLED = "fulfilled"
    REFUNDED = "refunded"


FINAL_KINDS = frozenset({Kind.FULFILLED, Kind.REFUNDED})
_SEEN = (PaymentStatus.CONFIRMING, PaymentStatus.CONFIRMED)


def state_kind(
    order_status: OrderStatus,
    payment_status: PaymentStatus | None,
    payment_kind: PaymentKind | None,
) -> Kind:
    """The page's state from the order's status and its latest shop-opened payment's.

    The open payment wins over the order's status: after `Try again` an expired order keeps
    its status (statuses only move forward) while its new payment waits.
    """
    if order_status is OrderStatus.FULFILLED:
        return Kind.FULFILLED
    if order_status is OrderStatus.REFUNDED:
        return Kind.REFUNDED
    if order_status is OrderStatus.PAID:
        return Kind.PAID
    if payment_status in _SEEN or order_status is OrderStatus.CONFIRMING:
        return Kind.CONFIRMING
    if payment_status in OPEN_PAYMENT_STATUSES:
        return Kind.INVOICE if payment_kind is PaymentKind.INVOICE else Kind.PAYING
    if order_status is OrderStatus.UNDERPAID or payment_status is PaymentStatus.UNDERPAID:
        return Kind.UNDERPAID
    if order_status in (OrderStatus.EXPIRED, OrderStatus.FAILED) or payment_status in (
        PaymentStatus.EXPIRED,
        PaymentStatus.FAILED,
    ):
        return Kind.RETRY
    return Kind.CHOOSE


def state_key(
    kind: Kind,
    order_status: OrderStatus,
    payment_id: uuid.UUID | None,
    payment_status: PaymentStatus | None,
    confirmations: int,
) -> str:
    """Changes whenever the page would show something else; the script compares it."""
    payment = f"{payment_id}:{payment_status}" if payment_id else "-"
    return f"{kind}|{order_status}|{payment}|{confirmations}"


# What the status badge says; its data-order-status keeps the status itself.
STATUS_LABELS = {
    OrderStatus.CREATED: "awaiting payment",
    OrderStatus.WAITING: "waiting for payment",
    OrderStatus.CONFIRMING: "confirming",
    OrderStatus.PAID: "paid",
    OrderStatus.FULFILLED: "keys ready",
    OrderStatus.UNDERPAID: "partly paid",
    OrderStatus.EXPIRED: "expired",
    OrderStatus.FAILED: "failed",
    OrderStatus.REFUNDED: "refunded",
}


def badge(kind: Kind, status: OrderStatus) -> tuple[str, str]:
    """The status badge's look and words: a new payment after `Try again` or an underpayment
    is waited for, whatever status the order keeps (statuses only move forward)."""
    if kind in (Kind.PAYING, Kind.INVOICE):
        return "waiting", STATUS_LABELS[OrderStatus.WAITING]
    return status.value, STATUS_LABELS[status]


def time_left(seconds: int | None) -> str:
    """Like the page's script writes it, for the first paint and for pages without script."""
    if seconds is None:
        return ""
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h {minutes} min"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


@dataclass(frozen=True)
class Balance:
    """What arrived, in the order's currency, and what is still missing: the order's credits
    as `GET /api/orders/{id}` gives them (`payments.queries.order_balance`), and the coins
    that arrived per payment."""

    paid: Decimal
    missing: Decimal
    arrived: tuple[tuple[Decimal, str], ...]  # (coins, ticker) per payment that got some


def balance(order: Order, payments: Sequence[Payment]) -> Balance:
    credited = order_balance(order, sum((p.credit for p in payments), Decimal(0)))
    arrived = tuple(
        (p.actually_paid, (p.pay_currency or "").upper()) for p in payments if p.actually_paid
    )
    return Balance(credited.paid, credited.due, arrived)


def shop_payments(payments: Sequence[Payment]) -> list[Payment]:
    """The payments the shop opened (not repeated deposits), newest first."""
    return [p for p in payments if p.parent_external_id is None]


def money(amount: Decimal | None) -> str:
    """A plain decimal string: no exponent, no trailing zeros past the cents."""
    if amount is None:
        return ""
    text = f"{amount.normalize():f}"
    if "." not in text:
        return f"{text}.00"
    whole, frac = text.split(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def coins_amount(amount: Decimal | None) -> str:
    """A coin amount exactly as NOWPayments gave it, without trailing zeros."""
    return "" if amount is None else f"{amount.normalize():f}"

"""What happens to payments: creation, the status sequences NOWPayments walks, and the
events a real account meets (late payments, refunds, repeated deposits).

Every status change, single step or sequence, goes through one method that stamps the
payment and emits its IPN; sequences are background tasks taking one step per
``step_delay``, and a new instruction for a payment replaces the sequence it was walking.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from decimal import ROUND_DOWN, Decimal
from enum import StrEnum

from cryptocheckout.sandbox import coins
from cryptocheckout.sandbox.notifier import Notifier
from cryptocheckout.sandbox.state import (
    Invoice,
    Payment,
    Status,
    Store,
    utcnow,
)

# Default share of the quoted amount paid by "pay less" and "pay more".
PARTIAL_SHARE = Decimal("0.5")
OVERPAID_SHARE = Decimal("1.1")


class Outcome(StrEnum):
    FINISHED = "finished"
    PARTIALLY_PAID = "partially_paid"
    OVERPAID = "overpaid"
    EXPIRED = "expired"
    FAILED = "failed"
    LATE_FINISHED = "late_finished"
    REFUNDED = "refunded"


class Paid(StrEnum):
    """How much has arrived by a step: set at the step where coins are first seen."""

    KEEP = "keep"
    FULL = "full"
    PARTIAL = "partial"
    OVER = "over"


# The `case` values the real sandbox understands on POST /v1/payment.
CASES: dict[str, Outcome] = {
    "success": Outcome.FINISHED,
    "partially_paid": Outcome.PARTIALLY_PAID,
    "failed": Outcome.FAILED,
    "expired": Outcome.EXPIRED,
}

_PAID_CHAIN = (Status.CONFIRMED, Status.SENDING, Status.FINISHED)

# The statuses each outcome walks through after `waiting`.
PLANS: dict[Outcome, tuple[tuple[Status, Paid], ...]] = {
    Outcome.FINISHED: ((Status.CONFIRMING, Paid.FULL), *((s, Paid.KEEP) for s in _PAID_CHAIN)),
    Outcome.OVERPAID: ((Status.CONFIRMING, Paid.OVER), *((s, Paid.KEEP) for s in _PAID_CHAIN)),
    Outcome.PARTIALLY_PAID: ((Status.PARTIALLY_PAID, Paid.PARTIAL),),
    Outcome.EXPIRED: ((Status.EXPIRED, Paid.KEEP),),
    Outcome.FAILED: ((Status.FAILED, Paid.KEEP),),
    Outcome.LATE_FINISHED: (
        (Status.EXPIRED, Paid.KEEP),
        (Status.CONFIRMING, Paid.FULL),
        *((s, Paid.KEEP) for s in _PAID_CHAIN),
    ),
    Outcome.REFUNDED: (
        (Status.CONFIRMING, Paid.FULL),
        *((s, Paid.KEEP) for s in _PAID_CHAIN),
        (Status.REFUNDED, Paid.KEEP),
    ),
}

# Statuses that mean coins have arrived, so actually_paid cannot still be zero.
_RECEIVED = frozenset(
    {Status.CONFIRMING, Status.CONFIRMED, Status.SENDING, Status.FINISHED, Status.REFUNDED}
)


def address_seed(invoice_id: int | None, payment_id: int, pay_currency: str) -> str:
    """What a payment's fake address and memo derive from."""
    # An invoice page shows the address before the payment exists, so it keys on the invoice.
    if invoice_id is not None:
        return f"invoice:{invoice_id}:{pay_currency}"
    return f"payment:{payment_id}"


def remaining_steps(outcome: Outcome, current: Status) -> list[tuple[Status, Paid]]:
    """The plan's steps after the payment's current status (all of them if it is not in it).

    So driving a confirming payment to ``finished`` goes on from there, and driving an
    expired one to ``finished`` is a late payment that starts at confirming.
    """
    plan = list(PLANS[outcome])
    statuses = [status for status, _ in plan]
    if current in statuses:
        last = len(statuses) - 1 - statuses[::-1].index(current)
        return plan[last + 1 :]
    return plan


@dataclass
class NewPayment:
    """What a caller asks for; the simulation fills in everything NOWPayments decides."""

    price_amount: Decimal
    price_currency: str
    pay_currency: str
    pay_amount: Decimal | None = None
    order_id: str | None = None
    order_description: str | None = None
    ipn_callback_url: str | None = None
    purchase_id: int | None = None
    outcome_currency: str | None = None
    is_fixed_rate: bool = False
    is_fee_paid_by_user: bool = False
    case: str | None = None
    invoice: Invoice | None = None


class Simulation:
    def __init__(self, store: Store, notifier: Notifier) -> None:
        self.store = store
        self.notifier = notifier
        self._sequences: dict[int, asyncio.Task[None]] = {}

    def cancel_all(self) -> None:
        for task in self._sequences.values():
            task.cancel()
        self._sequences.clear()
        self.notifier.cancel_all()

    # -- creation -------------------------------------------------------------------------

    def create_payment(self, request: NewPayment) -> Payment:
        coin = coins.COINS[request.pay_currency]
        now = utcnow()
        payment_id = self.store.new_id()
        invoice_id = request.invoice.id if request.invoice is not None else None
        seed = address_seed(invoice_id, payment_id, coin.ticker)
        pay_amount = request.pay_amount or coins.quote_pay_amount(
            request.price_amount, request.price_currency, coin.ticker
        )
        payment = Payment(
            id=payment_id,
            purchase_id=request.purchase_id or self.store.new_id(),
            invoice_id=invoice_id,
            parent_payment_id=None,
            status=Status.WAITING,
            pay_address=coins.fake_address(coin, seed),
            payin_extra_id=coins.fake_extra_id(coin, seed),
            price_amount=request.price_amount,
            price_currency=request.price_currency,
            pay_amount=pay_amount,
            pay_currency=coin.ticker,
            outcome_currency=request.outcome_currency or coin.ticker,
            order_id=request.order_id,
            order_description=request.order_description,
            ipn_callback_url=request.ipn_callback_url,
            is_fixed_rate=request.is_fixed_rate,
            is_fee_paid_by_user=request.is_fee_paid_by_user,
            case=request.case,
            created_at=now,
            updated_at=now,
            valid_until=self.store.valid_until(now, request.is_fixed_rate),
            history=[(Status.WAITING, now)],
        )
        self.store.add_payment(payment)
        # NOWPayments announces the new payment with a `waiting` IPN straight away.
        self.notifier.emit(payment)
        if request.case is not None:
            self.drive(payment, CASES[request.case])
        return payment

    def repeat_deposit(
        self, parent: Payment, status: Status, actually_paid: Decimal | None
    ) -> Payment:
        """A later deposit to the parent's address: a new payment naming its parent."""
        now = utcnow()
        with self.store.lock:
            child = Payment(
                id=self.store.new_id(),
                purchase_id=self.store.new_id(),
                invoice_id=parent.invoice_id,
                parent_payment_id=parent.id,
                status=Status.WAITING,
                pay_address=parent.pay_address,
                payin_extra_id=parent.payin_extra_id,
                price_amount=parent.price_amount,
                price_currency=parent.price_currency,
                pay_amount=parent.pay_amount,
                pay_currency=parent.pay_currency,
                outcome_currency=parent.outcome_currency,
                order_id=parent.order_id,
                order_description=parent.order_description,
                ipn_callback_url=parent.ipn_callback_url,
                is_fixed_rate=parent.is_fixed_rate,
                is_fee_paid_by_user=parent.is_fee_paid_by_user,
                case=None,
                created_at=now,
                updated_at=now,
                valid_until=parent.valid_until,
                chaos=replace(parent.chaos),
                history=[],
            )
            self.store.add_payment(child)
        if status == Status.PARTIALLY_PAID:
            steps = [(Status.PARTIALLY_PAID, Paid.PARTIAL)]
        else:
            steps = [(Status.CONFIRMING, Paid.FULL), *((s, Paid.KEEP) for s in _PAID_CHAIN)]
        self._start(child, steps, actually_paid, first_delay=False)
        return child

    # -- status changes -------------------------------------------------------------------

    def drive(
        self,
        payment: Payment,
        outcome: Outcome,
        actually_paid: Decimal | None = None,
        *,
        first_now: bool = False,
    ) -> list[Status]:
        """Walk the payment to ``outcome`` in the background; returns the statuses to come.

        With ``first_now`` the first step happens before this returns (a page that
        redirects after a button shows its effect), the rest one per ``step_delay``.
        """
        steps = remaining_steps(outcome, payment.status)
        if first_now and steps:
            self._cancel_sequence(payment.id)
            (status, paid), rest = steps[0], steps[1:]
            self._apply(payment, status, paid, actually_paid if paid is not Paid.KEEP else None)
            self._start(payment, rest, actually_paid, first_delay=True)
        else:
            self._start(payment, steps, actually_paid, first_delay=True)
        return [status for status, _ in steps]

    def set_status(
        self, payment: Payment, status: Status, actually_paid: Decimal | None = None
    ) -> None:
        """Move the payment to one status now and notify: the single step everything uses."""
        self._cancel_sequence(payment.id)
        paid = Paid.KEEP
        if actually_paid is None and payment.actually_paid <= 0:
            if status == Status.PARTIALLY_PAID:
                paid = Paid.PARTIAL
            elif status in _RECEIVED:
                paid = Paid.FULL
        self._apply(payment, status, paid, actually_paid)

    def _apply(
        self, payment: Payment, status: Status, paid: Paid, amount: Decimal | None = None
    ) -> None:
        with self.store.lock:
            if amount is not None:
                payment.actually_paid = amount
            elif paid is not Paid.KEEP:
                payment.actually_paid = _paid_amount(payment.pay_amount, paid)
            if payment.actually_paid > 0 and payment.payin_hash is None:
                payment.payin_hash = coins.fake_hash(f"in:{payment.id}")
            if status in (Status.SENDING, Status.FINISHED) and payment.payout_hash is None:
                payment.payout_hash = coins.fake_hash(f"out:{payment.id}")
            payment.status = status
            payment.updated_at = utcnow()
            payment.history.append((status, payment.updated_at))
            self.store.touch()
            self.notifier.emit(payment)

    def _cancel_sequence(self, payment_id: int) -> None:
        task = self._sequences.pop(payment_id, None)
        if task is not None:
            task.cancel()

    def _start(
        self,
        payment: Payment,
        steps: list[tuple[Status, Paid]],
        actually_paid: Decimal | None,
        *,
        first_delay: bool,
    ) -> None:
        # A new instruction replaces whatever the payment was still walking through.
        self._cancel_sequence(payment.id)
        if steps:
            task = self.notifier.spawn(self._walk(payment, steps, actually_paid, first_delay))
            self._sequences[payment.id] = task

    async def _walk(
        self,
        payment: Payment,
        steps: list[tuple[Status, Paid]],
        actually_paid: Decimal | None,
        first_delay: bool,
    ) -> None:
        try:
            for index, (status, paid) in enumerate(steps):
                if index or first_delay:
                    await asyncio.sleep(self.store.settings.step_delay)
                amount = actually_paid if paid is not Paid.KEEP else None
                self._apply(payment, status, paid, amount)
        finally:
            if self._sequences.get(payment.id) is asyncio.current_task():
                del self._sequences[payment.id]
                # Waiters for "nothing more under way" need to hear that the walk ended.
                self.store.touch()

    def is_walking(self, payment_id: int) -> bool:
        return payment_id in self._sequences

    def walking(self) -> set[int]:
        """Payments with statuses still to come."""
        return set(self._sequences)


def paid_amount(pay_amount: Decimal, share: Decimal) -> Decimal:
    """What arrives when ``share`` of the quoted amount is sent, in whole satoshi-like units."""
    return (pay_amount * share).quantize(coins.CRYPTO_QUANTUM, rounding=ROUND_DOWN)


def _paid_amount(pay_amount: Decimal, paid: Paid) -> Decimal:
    if paid is Paid.PARTIAL:
        return paid_amount(pay_amount, PARTIAL_SHARE)
    if paid is Paid.OVER:
        return paid_amount(pay_amount, OVERPAID_SHARE)
    return pay_amount

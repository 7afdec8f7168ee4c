"""Hypothesis stateful tests of the notification state machine, on both databases.

Random sequences of deliveries for several payments (every status, duplicates, redeliveries,
reorderings through partial processing, late payments after expiry, short, exact and over
payments, prices and currencies not ours, repeated deposits) go through the real IPN storage
and the real worker. After every step:

- statuses never move backwards, for payments and orders;
- credits are never counted twice: a payment's credit never exceeds the largest credit any
  notification sent for that provider payment could give (redeliveries, stale and repeated
  statuses add nothing), and once everything is processed it is exactly that;
- an order (not refunded) is paid or fulfilled iff its credits reach its total less the
  tolerance;
- an excess of credits over the total is always flagged for staff on one of its payments;
- once everything is processed, every order that got a matching `finished` is paid,
  fulfilled or refunded;
- an order never has more than one fulfilment job, and never more keys than it bought;
  a key is never held twice (a unique row per key) nor delivered to another order than the
  one holding it.

Besides the original payment, the rules add partial payments, top-ups (a further payment the
shop opens for what is due, once no payment is open), second full payments, repeated deposits
and late payments (any status may follow `expired`).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import delete, func, select

from cryptocheckout.catalogue.models import LicenceKey, StockHold
from cryptocheckout.kit.db import create_engine, create_sessionmaker
from cryptocheckout.kit.jobs_models import Job
from cryptocheckout.models import Base
from cryptocheckout.nowpayments.signature import canonical_ipn_body, parse_js_json
from cryptocheckout.orders.models import Order, OrderStatus
from cryptocheckout.payments.models import OPEN_PAYMENT_STATUSES, Payment, PaymentKind
from cryptocheckout.payments.state_machine import (
    FULFIL_ORDER_JOB,
    ORDER_RANK,
    PAYMENT_RANK,
    credit_of,
    order_target,
)
from cryptocheckout.webhooks.ingest import NotificationStore, incoming
from cryptocheckout.webhooks.models import WebhookLog, WebhookLogStatus
from cryptocheckout.webhooks.processor import process_next
from cryptocheckout.worker import Worker
from tests.support.ipn import ipn_payload
from tests.support.shop import Paying, paying_order

T = TypeVar("T")
ORDERS = 3
STATUSES = [
    "waiting",
    "confirming",
    "confirmed",
    "sending",
    "finished",
    "partially_paid",
    "expired",
    "failed",
    "cancelled",
    "refunded",
]
AMOUNTS = ["exact", "short", "half", "third", "over", "wrong_price", "wrong_currency"]
PAID_OR_AFTER = {OrderStatus.PAID, OrderStatus.FULFILLED}
CREDITING = ("finished", "partially_paid")


@dataclass(frozen=True)
class Quote:
    """A provider payment of the model: its order, what it asked for, in coins and in fiat."""

    order: int
    pay_amount: Decimal
    price: Decimal


class NotificationMachine(RuleBasedStateMachine):
    database_url: ClassVar[str] = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.engine = create_engine(self.database_url)
        self.sessionmaker = create_sessionmaker(self.engine)
        self.store = NotificationStore(self.engine)
        self.worker = Worker(self.sessionmaker)
        self.orders: list[Paying] = []
        self.sent: list[bytes] = []
        self.matching_finished: set[uuid.UUID] = set()
        self.order_ranks: dict[uuid.UUID, int] = {}
        self.payment_ranks: dict[uuid.UUID, int] = {}
        self.quotes: dict[str, Quote] = {}
        # The largest credit a notification sent for each provider payment may give.
        self.max_credit: dict[str, Decimal] = {}
        self.clock = itertools.count(1_700_000_000_000)
        self.ids = itertools.count(8_000_000_000)
        self.run(self._reset())
        self.run(self.store.start())

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    async def _reset(self) -> None:
        async with self.engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                await conn.execute(delete(table))

    def teardown(self) -> None:
        self.run(self.store.stop())
        self.run(self._reset())  # leave the shared test database empty for the next test
        self.run(self.engine.dispose())
        self.loop.close()

    @initialize()
    def create_orders(self) -> None:
        for n in range(ORDERS):
            paying = self.run(
                paying_order(self.sessionmaker, external_id=str(5_000_000_000 + n), keys=2)
            )
            self.orders.append(paying)
            self.quotes[str(paying.external_id)] = Quote(n, paying.pay_amount, paying.price)

    def _payload(self, external_id: str, status: str, amounts: str, **extra: Any) -> dict[str, Any]:
        quote = self.quotes[external_id]
        paying = self.orders[quote.order]
        fields: dict[str, Any] = {
            "order_id": str(paying.order_id),
            "price_amount": quote.price,
            "pay_amount": quote.pay_amount,
            "actually_paid": {
                "exact": quote.pay_amount,
                "short": quote.pay_amount - Decimal("0.00000001"),
                "half": quote.pay_amount / 2,
                "third": (quote.pay_amount / 3).quantize(Decimal("0.00000001")),
                "over": quote.pay_amount * 2,
            }.get(amounts, quote.pay_amount),
            "updated_at": next(self.clock),
        }
        if amounts == "wrong_price":
            fields["price_amount"] = quote.price + 1
        if amounts == "wrong_currency":
            fields["price_currency"] = "eur"
        fields.update(extra)
        payment_id = fields.pop("payment_id", external_id)
        return ipn_payload(payment_id, status, **fields)

    def _deliver(self, external_id: str, payload: dict[str, Any], amounts: str) -> None:
        quote = self.quotes[external_id]
        matching = amounts in ("exact", "over") and quote.price >= self.orders[quote.order].price
        if payload["payment_status"] == "finished" and matching:
            self.matching_finished.add(self.orders[quote.order].order_id)
        body = canonical_ipn_body(payload)
        self._store(body)
        parsed = parse_js_json(body)
        assert isinstance(parsed, dict)
        if parsed["payment_status"] not in CREDITING:
            return
        if parsed["price_currency"] != "usd" or Decimal(str(parsed["price_amount"])) != quote.price:
            return  # a conflict credits nothing
        credit = credit_of(
            Decimal(str(parsed["actually_paid"])), Decimal(str(parsed["pay_amount"])), quote.price
        )
        self.max_credit[external_id] = max(self.max_credit.get(external_id, Decimal(0)), credit)

    def _store(self, body: bytes) -> None:
        parsed = parse_js_json(body)
        assert isinstance(parsed, dict)
        self.run(self.store.store(incoming(body, parsed)))
        self.sent.append(body)

    @rule(
        order=st.integers(0, ORDERS - 1),
        status=st.sampled_from(STATUSES),
        amounts=st.sampled_from(AMOUNTS),
    )
    def deliver(self, order: int, status: str, amounts: str) -> None:
        external_id = str(self.orders[order].external_id)
        self._deliver(external_id, self._payload(external_id, status, amounts), amounts)

    @rule(
        order=st.integers(0, ORDERS - 1),
        status=st.sampled_from(CREDITING),
        amounts=st.sampled_from(AMOUNTS),
    )
    def repeated_deposit(self, order: int, status: str, amounts: str) -> None:
        parent = str(self.orders[order].external_id)
        child = str(next(self.ids))
        self.quotes[child] = self.quotes[parent]
        payload = self._payload(child, status, amounts, parent_payment_id=int(parent))
        self._deliver(child, payload, amounts)

    @rule(order=st.integers(0, ORDERS - 1), full=st.booleans())
    def open_another_payment(self, order: int, full: bool) -> None:
        """A top-up for what is due (or a second payment for the whole price), opened the
        way the shop opens one: only when no payment of the order is open."""
        paying = self.orders[order]
        external_id = str(next(self.ids))
        opened = self.run(self._open_payment(paying, external_id, full))
        if opened is not None:
            self.quotes[external_id] = Quote(order, opened[0], opened[1])

    async def _open_payment(
        self, paying: Paying, external_id: str, full: bool
    ) -> tuple[Decimal, Decimal] | None:
        async with self.sessionmaker() as session:
            order = await session.get(Order, paying.order_id)
            assert order is not None
            payments = (
                (await session.execute(select(Payment).where(Payment.order_id == order.id)))
                .scalars()
                .all()
            )
            if any(
                p.status in OPEN_PAYMENT_STATUSES and p.parent_external_id is None for p in payments
            ):
                return None
            due = order.total - sum((p.credit for p in payments), Decimal(0))
            price = order.total if full or due <= 0 else due
            pay_amount = (paying.pay_amount * price / order.total).quantize(Decimal("0.00000001"))
            if pay_amount <= 0:
                return None
            session.add(
                Payment(
                    order_id=order.id,
                    kind=PaymentKind.PAYMENT,
                    external_id=external_id,
                    price_amount=price,
                    price_currency="USD",
                    pay_amount=pay_amount,
                    pay_currency="btc",
                )
            )
            await session.commit()
            return pay_amount, price

    @precondition(lambda self: len(self.quotes) > ORDERS)
    @rule(data=st.data(), status=st.sampled_from(STATUSES), amounts=st.sampled_from(AMOUNTS))
    def deliver_to_another_payment(self, data: st.DataObject, status: str, amounts: str) -> None:
        external_id = data.draw(st.sampled_from(sorted(self.quotes)))
        quote = self.quotes[external_id]
        extra: dict[str, Any] = {}
        if external_id not in {str(p.external_id) for p in self.orders}:
            parent = next(
                (
                    str(p.external_id)
                    for p in self.orders
                    if self.quotes[str(p.external_id)] is quote
                ),
                None,
            )
            if parent is not None and external_id != parent:
                extra["parent_payment_id"] = int(parent)  # a repeated deposit's later status
        self._deliver(external_id, self._payload(external_id, status, amounts, **extra), amounts)

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        self._store(data.draw(st.sampled_from(self.sent)))

    @rule(count=st.integers(1, 3))
    def process_some(self, count: int) -> None:
        # Processing a few at a time, between deliveries, is what reorders them.
        for _ in range(count):
            if not self.run(process_next(self.sessionmaker, Decimal(0))):
                break

    @rule()
    def drain(self) -> None:
        async def settle() -> None:
            while await self.worker.run_once():
                pass

        self.run(settle())
        for order_id in self.matching_finished:
            status = self.run(self._order_status(order_id))
            assert status in (*PAID_OR_AFTER, OrderStatus.REFUNDED), (order_id, status)
        if self.run(self._all_processed()):
            credits = self.run(self._credits())
            for external_id, credit in credits.items():
                expected = self.max_credit.get(external_id, Decimal(0))
                assert credit == expected, (external_id, credit, expected)

    async def _all_processed(self) -> bool:
        async with self.sessionmaker() as session:
            pending = await session.scalar(
                select(func.count())
                .select_from(WebhookLog)
                .where(WebhookLog.status == WebhookLogStatus.PENDING)
            )
            return not pending

    async def _credits(self) -> dict[str, Decimal]:
        async with self.sessionmaker() as session:
            rows = await session.execute(select(Payment.external_id, Payment.credit))
            return {str(external_id): credit for external_id, credit in rows.all()}

    async def _order_status(self, order_id: uuid.UUID) -> OrderStatus:
        async with self.sessionmaker() as session:
            order = await session.get(Order, order_id)
            assert order is not None
            return order.status

    @invariant()
    def never_backwards_and_paid_only_when_matching(self) -> None:
        async def check() -> None:
            async with self.sessionmaker() as session:
                for order in (await session.execute(select(Order))).scalars():
                    rank = ORDER_RANK[order.status]
                    assert rank >= self.order_ranks.get(order.id, 0), order.status
                    self.order_ranks[order.id] = rank
                    payments = (
                        (await session.execute(select(Payment).where(Payment.order_id == order.id)))
                        .scalars()
                        .all()
                    )
                    credits = sum((p.credit for p in payments), Decimal(0))
                    counted = sum(1 for p in payments if p.credit > 0)
                    if order.status is not OrderStatus.REFUNDED:
                        reached = order_target(
                            credits, order.total, Decimal(0), credited_payments=counted
                        )
                        assert (order.status in PAID_OR_AFTER) == (reached is OrderStatus.PAID), (
                            "paid iff the credits reach the total",
                            order.status,
                            credits,
                        )
                    if credits > order.total:
                        assert any(
                            p.needs_review and "overpaid by" in (p.review_reason or "")
                            for p in payments
                        ), "an excess not flagged"
                for payment in (await session.execute(select(Payment))).scalars():
                    rank = PAYMENT_RANK[payment.status]
                    assert rank >= self.payment_ranks.get(payment.id, 0), payment.status
                    self.payment_ranks[payment.id] = rank
                    ceiling = self.max_credit.get(str(payment.external_id), Decimal(0))
                    assert payment.credit <= ceiling, "a credit counted twice"
                jobs = (
                    (await session.execute(select(Job.payload).where(Job.kind == FULFIL_ORDER_JOB)))
                    .scalars()
                    .all()
                )
                per_order = [payload["order_id"] for payload in jobs]
                assert len(per_order) == len(set(per_order)), "two fulfilment jobs for one order"
                keys = (
                    await session.execute(
                        select(LicenceKey.order_id, func.count())
                        .where(LicenceKey.order_id.is_not(None))
                        .group_by(LicenceKey.order_id)
                    )
                ).all()
                assert all(count == 1 for _, count in keys), "more keys than bought"
                crossed = await session.scalar(
                    select(func.count())
                    .select_from(StockHold)
                    .join(LicenceKey, LicenceKey.id == StockHold.licence_key_id)
                    .where(
                        LicenceKey.order_id.is_not(None),
                        LicenceKey.order_id != StockHold.order_id,
                    )
                )
                assert not crossed, "a key held for one order was delivered to another"

        if self.orders:
            self.run(check())


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"], indirect=True)
def test_notification_sequences_keep_the_invariants(database_url: str) -> None:
    NotificationMachine.database_url = database_url
    run_state_machine_as_test(
        NotificationMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )

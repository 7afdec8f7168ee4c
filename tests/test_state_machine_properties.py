"""Hypothesis stateful tests of the notification state machine, on both databases.

Random sequences of deliveries for several payments (every status, duplicates, redeliveries,
reorderings through partial processing, late payments after expiry, short, exact and over
payments, prices and currencies not ours, repeated deposits) go through the real IPN storage
and the real worker. After every step:

- statuses never move backwards, for payments and orders;
- an order is paid (or fulfilled) only if a `finished` with matching amounts arrived for it;
- once everything is processed, every order that got such a `finished` is paid, fulfilled
  or refunded;
- an order never has more than one fulfilment job, and never more keys than it bought.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Coroutine
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

from cryptocheckout.catalogue.models import LicenceKey
from cryptocheckout.kit.db import create_engine, create_sessionmaker
from cryptocheckout.kit.jobs_models import Job
from cryptocheckout.models import Base
from cryptocheckout.nowpayments.signature import canonical_ipn_body, parse_js_json
from cryptocheckout.orders.models import Order, OrderStatus
from cryptocheckout.payments.models import Payment
from cryptocheckout.payments.state_machine import FULFIL_ORDER_JOB, ORDER_RANK, PAYMENT_RANK
from cryptocheckout.webhooks.ingest import NotificationStore, incoming
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
AMOUNTS = ["exact", "short", "over", "wrong_price", "wrong_currency"]
PAID_OR_AFTER = {OrderStatus.PAID, OrderStatus.FULFILLED}


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
            self.orders.append(
                self.run(
                    paying_order(self.sessionmaker, external_id=str(5_000_000_000 + n), keys=2)
                )
            )

    def _payload(self, paying: Paying, status: str, amounts: str, **extra: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "order_id": str(paying.order_id),
            "price_amount": paying.price,
            "pay_amount": paying.pay_amount,
            "actually_paid": {
                "exact": paying.pay_amount,
                "short": paying.pay_amount - Decimal("0.00000001"),
                "over": paying.pay_amount * 2,
            }.get(amounts, paying.pay_amount),
            "updated_at": next(self.clock),
        }
        if amounts == "wrong_price":
            fields["price_amount"] = paying.price + 1
        if amounts == "wrong_currency":
            fields["price_currency"] = "eur"
        fields.update(extra)
        payment_id = fields.pop("payment_id", paying.external_id)
        return ipn_payload(payment_id, status, **fields)

    def _deliver(self, paying: Paying, payload: dict[str, Any], amounts: str) -> None:
        if payload["payment_status"] == "finished" and amounts in ("exact", "over"):
            self.matching_finished.add(paying.order_id)
        self._store(canonical_ipn_body(payload))

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
        paying = self.orders[order]
        self._deliver(paying, self._payload(paying, status, amounts), amounts)

    @rule(
        order=st.integers(0, ORDERS - 1),
        status=st.sampled_from(["finished", "partially_paid"]),
        amounts=st.sampled_from(AMOUNTS),
    )
    def repeated_deposit(self, order: int, status: str, amounts: str) -> None:
        paying = self.orders[order]
        payload = self._payload(
            paying,
            status,
            amounts,
            payment_id=next(self.ids),
            parent_payment_id=int(paying.external_id or 0),
        )
        self._deliver(paying, payload, amounts)

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
                    if order.status in PAID_OR_AFTER:
                        assert order.id in self.matching_finished, (
                            "paid without a matching finished"
                        )
                for payment in (await session.execute(select(Payment))).scalars():
                    rank = PAYMENT_RANK[payment.status]
                    assert rank >= self.payment_ranks.get(payment.id, 0), payment.status
                    self.payment_ranks[payment.id] = rank
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

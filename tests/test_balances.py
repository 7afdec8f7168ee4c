"""Balances: each provider payment credits its order once, forward only, and the order's
status follows the sum of its credits."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from cryptocheckout.kit.jobs_models import Job
from cryptocheckout.orders.models import OrderStatus
from cryptocheckout.payments.models import Payment, StatusChange
from cryptocheckout.payments.state_machine import (
    FULFIL_ORDER_JOB,
    amount_required,
    credit_of,
    order_target,
)
from tests.conftest import Admin
from tests.support.shop import paying_order
from tests.test_notifications import Flow, Sessions
from tests.test_notifications import flow as flow  # the fixture


def test_credit_is_exact_and_rounded_down_to_eight_decimals() -> None:
    assert credit_of(Decimal(1), Decimal(3), Decimal(10)) == Decimal("3.33333333")
    assert credit_of(Decimal(2), Decimal(3), Decimal(10)) == Decimal("6.66666666")  # not ...67
    assert credit_of(Decimal("0.00045"), Decimal("0.00045"), Decimal("12.5")) == Decimal("12.5")
    # 18-decimal token amounts: no float, no loss before the one cut
    paid = Decimal("0.123456789012345678")
    assert credit_of(paid, paid, Decimal("99.99")) == Decimal("99.99")
    assert credit_of(Decimal(0), Decimal(1), Decimal(10)) == 0


def test_paid_iff_credits_reach_the_total_less_the_tolerance() -> None:
    total = Decimal("12.50")
    assert order_target(total, total, Decimal(0)) is OrderStatus.PAID
    assert order_target(total - Decimal("0.00000001"), total, Decimal(0)) is OrderStatus.UNDERPAID
    assert amount_required(total, Decimal(1)) == Decimal("12.375")
    assert order_target(Decimal("12.375"), total, Decimal(1)) is OrderStatus.PAID
    assert order_target(Decimal("12.37499999"), total, Decimal(1)) is OrderStatus.UNDERPAID
    # two credits cut down may lose one unit of the eighth decimal between them, no more
    halves = credit_of(Decimal(1), Decimal(3), total) + credit_of(Decimal(2), Decimal(3), total)
    assert halves == Decimal("12.49999999")
    assert order_target(halves, total, Decimal(0), credited_payments=2) is OrderStatus.PAID
    short = halves - Decimal("0.00000001")
    assert order_target(short, total, Decimal(0), credited_payments=2) is OrderStatus.UNDERPAID


async def _payments(sessionmaker: Sessions, paying_order_id: object) -> list[Payment]:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(Payment).where(Payment.order_id == paying_order_id).order_by(Payment.created_at)
        )
        return list(rows.scalars())


async def _credit_trail(sessionmaker: Sessions, order_id: object) -> list[str]:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(StatusChange.note)
            .where(StatusChange.order_id == order_id, StatusChange.subject == "credit")
            .order_by(StatusChange.created_at)
        )
        return [note or "" for note in rows.scalars()]


async def test_credit_only_moves_forward_and_is_audited(flow: Flow, sessionmaker: Sessions) -> None:
    paying = await paying_order(sessionmaker)  # 12.50 USD for 0.00045 BTC
    await flow.send(paying, "partially_paid", actually_paid=Decimal("0.0002"))
    await flow.drain()
    await flow.send(paying, "partially_paid", actually_paid=Decimal("0.0001"))  # older news
    await flow.drain()
    [payment] = await _payments(sessionmaker, paying.order_id)
    assert payment.credit == Decimal("5.55555555")  # 0.0002 / 0.00045 x 12.50, cut down
    await flow.send(paying, "partially_paid", actually_paid=Decimal("0.0003"))
    await flow.drain()
    [payment] = await _payments(sessionmaker, paying.order_id)
    assert payment.credit == Decimal("8.33333333")
    assert (await flow.state(paying))[0] is OrderStatus.UNDERPAID
    trail = await _credit_trail(sessionmaker, paying.order_id)
    assert len(trail) == 2
    assert "-> 5.55555555 USD" in trail[0]
    assert "-> 8.33333333 USD" in trail[1]


async def test_partial_payments_on_siblings_add_up_to_paid(
    flow: Flow, sessionmaker: Sessions
) -> None:
    paying = await paying_order(sessionmaker)
    await flow.send(paying, "partially_paid", actually_paid=Decimal("0.0002"))
    await flow.drain()
    # a repeated deposit brings the rest: the order is paid by its balance, nothing flagged
    await flow.send(
        paying,
        "partially_paid",
        payment_id="91",
        parent_payment_id=5077125051,
        actually_paid=Decimal("0.00025"),
    )
    await flow.drain()
    assert (await flow.state(paying))[0] is OrderStatus.FULFILLED
    payments = await _payments(sessionmaker, paying.order_id)
    assert sum(p.credit for p in payments) == Decimal("12.49999999")  # two cuts down
    assert all("overpaid" not in (p.review_reason or "") for p in payments)
    # the same notifications again credit nothing more
    await flow.send(
        paying,
        "partially_paid",
        payment_id="91",
        parent_payment_id=5077125051,
        actually_paid=Decimal("0.00025"),
        updated_at=1,
    )
    await flow.drain()
    assert sum(p.credit for p in await _payments(sessionmaker, paying.order_id)) == Decimal(
        "12.49999999"
    )
    assert await flow.count(Job, Job.kind == FULFIL_ORDER_JOB) == 1


async def test_a_second_full_payment_is_credited_and_flagged_with_the_excess(
    flow: Flow, sessionmaker: Sessions
) -> None:
    paying = await paying_order(sessionmaker, keys=5)
    await flow.send(paying, "finished")
    await flow.drain()
    await flow.send(paying, "finished", payment_id="92", parent_payment_id=5077125051)
    await flow.drain()
    assert (await flow.state(paying))[0] is OrderStatus.FULFILLED
    assert await flow.count(Job, Job.kind == FULFIL_ORDER_JOB) == 1
    first, second = await _payments(sessionmaker, paying.order_id)
    assert (first.credit, second.credit) == (Decimal("12.5"), Decimal("12.5"))
    assert not first.needs_review
    assert second.needs_review and "overpaid by 12.50000000 USD" in (second.review_reason or "")


async def test_an_overpayment_flags_the_excess(flow: Flow, sessionmaker: Sessions) -> None:
    paying = await paying_order(sessionmaker)
    await flow.send(paying, "finished", actually_paid=Decimal("0.0009"))
    await flow.drain()
    [payment] = await _payments(sessionmaker, paying.order_id)
    assert payment.credit == Decimal(25)
    assert "overpaid by 12.50000000 USD" in (payment.review_reason or "")


async def test_a_conflicting_price_credits_nothing(flow: Flow, sessionmaker: Sessions) -> None:
    paying = await paying_order(sessionmaker)
    await flow.send(paying, "finished", price_amount=Decimal("1.00"))
    await flow.send(paying, "partially_paid", price_currency="eur")
    await flow.drain()
    [payment] = await _payments(sessionmaker, paying.order_id)
    assert payment.credit == 0
    assert (await flow.state(paying))[0] is OrderStatus.UNDERPAID
    assert payment.needs_review and "conflict" in (payment.review_reason or "")


async def test_staff_see_each_payments_credit_and_its_trail(
    flow: Flow, sessionmaker: Sessions, admin: Admin
) -> None:
    paying = await paying_order(sessionmaker)
    await flow.send(paying, "partially_paid", actually_paid=Decimal("0.0002"))
    await flow.drain()
    response = await flow.client.get(
        f"/api/admin/payments/{paying.payment_id}", headers=admin.headers
    )
    assert response.status_code == 200, response.text
    detail = response.json()
    assert detail["credit"] == "5.55555555"
    [credit] = [row for row in detail["timeline"] if row["subject"] == "credit"]
    assert credit["to_status"] == "credited" and "-> 5.55555555 USD" in credit["note"]

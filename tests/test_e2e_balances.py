"""End to end against the offline sandbox: balances across payments, paying the rest."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy import select

from cryptocheckout.payments.models import Payment
from tests.test_e2e import Checkout
from tests.test_e2e import checkout as checkout  # the fixture


async def _payments(checkout: Checkout, order_id: object) -> list[Payment]:
    async with checkout.sessionmaker() as session:
        rows = await session.execute(
            select(Payment)
            .where(Payment.order_id == uuid.UUID(str(order_id)))
            .order_by(Payment.created_at)
        )
        return list(rows.scalars())


async def _underpay_half(checkout: Checkout) -> tuple[dict[str, object], dict[str, str]]:
    order = await checkout.order()  # 12.50 USD
    fresh = await checkout.view(order)
    assert (fresh["amount_paid"], fresh["amount_due"], fresh["amount_over"]) == (
        "0.00",
        "12.50",
        "0.00",
    )
    created = await checkout.pay(order, "ltc")  # half the price is above LTC's minimum
    assert created.status_code == 201, created.text
    first = created.json()
    half = Decimal(first["pay_amount"]) / 2
    await checkout.drive(first["external_id"], "partially_paid", actually_paid=str(half))
    view = await checkout.wait_for(order, "underpaid")
    assert (view["amount_paid"], view["amount_due"], view["amount_over"]) == (
        "6.25",
        "6.25",
        "0.00",
    )
    return order, first


async def test_underpay_then_pay_the_rest_is_fulfilled_and_not_flagged(
    checkout: Checkout,
) -> None:
    order, first = await _underpay_half(checkout)
    rest = await checkout.pay(order, "ltc")
    assert rest.status_code == 201, rest.text
    second = rest.json()
    assert second["price_amount"] == "6.25" and second["id"] != first["id"]
    await checkout.drive(second["external_id"], "finished")
    view = await checkout.wait_for(order, "fulfilled")
    assert (view["amount_paid"], view["amount_due"], view["amount_over"]) == (
        "12.50",
        "0.00",
        "0.00",
    )
    rows = await _payments(checkout, order["id"])
    assert [row.credit for row in rows] == [Decimal("6.25"), Decimal("6.25")]
    # the top-up is linked to the purchase the first payment started, as the sandbox allows
    assert rows[0].purchase_id and rows[1].purchase_id == rows[0].purchase_id
    assert not any(row.needs_review for row in rows)


async def test_underpay_then_the_full_price_again_is_fulfilled_and_flagged(
    checkout: Checkout,
) -> None:
    order, first = await _underpay_half(checkout)
    # the customer sends the whole price again to the same address
    repeated = await checkout.sandbox.post(
        f"/sandbox/payments/{first['external_id']}/repeat-deposit",
        json={"status": "finished", "actually_paid": first["pay_amount"]},
    )
    assert repeated.status_code == 201, repeated.text
    view = await checkout.wait_for(order, "fulfilled")
    assert (view["amount_paid"], view["amount_due"], view["amount_over"]) == (
        "18.75",
        "0.00",
        "6.25",
    )
    rows = await _payments(checkout, order["id"])
    flagged = [row for row in rows if row.needs_review]
    assert len(flagged) == 1
    assert "overpaid by 6.25000000 USD" in (flagged[0].review_reason or "")

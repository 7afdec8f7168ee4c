"""End to end against the offline sandbox: balances across payments, paying the rest."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select, update

from cryptocheckout.catalogue.models import StockHold
from cryptocheckout.kit.clock import utcnow
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


async def test_the_last_key_held_by_an_open_payment_refuses_a_second_checkout(
    checkout: Checkout,
) -> None:
    product_id = await checkout.product(keys=1)
    body = {"email": "buyer@example.com", "items": [{"product_id": product_id, "quantity": 1}]}
    first = await checkout.shop.post("/api/orders", json=body)
    assert first.status_code == 201, first.text
    opened = await checkout.pay(first.json())
    assert opened.status_code == 201, opened.text
    async with checkout.sessionmaker() as session:
        payment = await session.get(Payment, uuid.UUID(opened.json()["id"]))
        hold = (await session.execute(select(StockHold))).scalar_one()
    assert payment is not None and payment.expires_at is not None
    # held while the payment may be paid, plus the grace
    assert hold.expires_at is not None and hold.expires_at >= payment.expires_at
    refused = await checkout.shop.post("/api/orders", json=body)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["type"] == "out_of_stock"
    async with checkout.sessionmaker() as session:  # time passes: the hold lapses
        await session.execute(update(StockHold).values(expires_at=utcnow() - timedelta(seconds=1)))
        await session.commit()
    second = await checkout.shop.post("/api/orders", json=body)
    assert second.status_code == 201, second.text
    async with checkout.sessionmaker() as session:
        [hold] = (await session.execute(select(StockHold))).scalars().all()
    assert str(hold.order_id) == second.json()["id"]  # the key moved to the second order

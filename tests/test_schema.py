"""Constraints and exact types, on both databases."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cryptocheckout.catalogue.models import Product
from cryptocheckout.orders.models import Order, OrderItem
from cryptocheckout.payments.models import Payment, PaymentKind, PaymentStatus
from cryptocheckout.webhooks.models import WebhookLog

Sessions = async_sessionmaker[AsyncSession]


async def _order(session: AsyncSession, total: str = "10.00") -> tuple[Product, Order]:
    product = Product(
        sku=f"S-{uuid.uuid4().hex[:6]}", name="p", price=Decimal(total), currency="USD"
    )
    order = Order(
        email="a@example.com", total=Decimal(total), currency="USD", access_token="t", items=[]
    )
    session.add_all([product, order])
    await session.flush()
    order.items.append(
        OrderItem(
            product_id=product.id,
            position=0,
            sku=product.sku,
            name="p",
            quantity=1,
            unit_price=product.price,
        )
    )
    await session.flush()
    return product, order


def _payment(order: Order, **fields: object) -> Payment:
    values: dict[str, object] = {
        "order_id": order.id,
        "kind": PaymentKind.PAYMENT,
        "price_amount": order.total,
        "price_currency": "usd",
    }
    values.update(fields)
    return Payment(**values)


@pytest.mark.parametrize(
    "amount",
    ["123456789012.12345678", "0.00000001", "999999999999.99999999", "0.30000003", "-1.5"],
)
async def test_twenty_significant_digits_round_trip_exactly(
    sessionmaker: Sessions, amount: str
) -> None:
    async with sessionmaker() as session:
        _, order = await _order(session)
        session.add(_payment(order, external_id="p1", actually_paid=Decimal(amount)))
        await session.commit()
    async with sessionmaker() as session:
        stored = (await session.execute(select(Payment.actually_paid))).scalar_one()
    assert stored == Decimal(amount)
    assert format(stored, "f").rstrip("0").rstrip(".") == amount.rstrip("0").rstrip(".")


async def test_amounts_beyond_the_scale_are_refused(sessionmaker: Sessions) -> None:
    async with sessionmaker() as session:
        _, order = await _order(session)
        session.add(_payment(order, actually_paid=Decimal("0.000000001")))
        with pytest.raises(Exception, match="decimal places"):
            await session.flush()


async def test_timestamps_come_back_aware_utc(sessionmaker: Sessions) -> None:
    moment = datetime(2026, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    async with sessionmaker() as session:
        _, order = await _order(session)
        session.add(_payment(order, expires_at=moment))
        await session.commit()
    async with sessionmaker() as session:
        stored = (await session.execute(select(Payment.expires_at))).scalar_one()
    assert stored == moment
    assert stored is not None and stored.tzinfo is not None
    assert stored.utcoffset() == timedelta(0)
    assert stored.hour == 10


async def test_naive_timestamps_are_refused(sessionmaker: Sessions) -> None:
    async with sessionmaker() as session:
        _, order = await _order(session)
        session.add(_payment(order, expires_at=datetime(2026, 1, 1)))  # noqa: DTZ001
        with pytest.raises(Exception, match="timezone-aware"):
            await session.flush()


async def test_deleting_an_order_cascades_to_items_and_payments(sessionmaker: Sessions) -> None:
    async with sessionmaker() as session:
        _, order = await _order(session)
        session.add(_payment(order, external_id="p1", status=PaymentStatus.EXPIRED))
        await session.commit()
        order_id = order.id
    async with sessionmaker() as session:
        await session.execute(Order.__table__.delete().where(Order.id == order_id))
        await session.commit()
    async with sessionmaker() as session:
        assert (
            await session.execute(select(func.count()).select_from(OrderItem))
        ).scalar_one() == 0
        assert (await session.execute(select(func.count()).select_from(Payment))).scalar_one() == 0


async def test_external_id_is_unique(sessionmaker: Sessions) -> None:
    async with sessionmaker() as session:
        _, order = await _order(session)
        session.add(_payment(order, external_id="5077125051", status=PaymentStatus.EXPIRED))
        session.add(_payment(order, external_id="5077125051", status=PaymentStatus.FAILED))
        with pytest.raises(IntegrityError):
            await session.commit()


async def test_an_order_has_at_most_one_open_payment(sessionmaker: Sessions) -> None:
    async with sessionmaker() as session:
        _, order = await _order(session)
        session.add(_payment(order, status=PaymentStatus.EXPIRED))
        session.add(_payment(order, status=PaymentStatus.FAILED))
        session.add(_payment(order, status=PaymentStatus.WAITING))
        await session.commit()  # closed payments do not count
        session.add(_payment(order, status=PaymentStatus.CREATED))
        with pytest.raises(IntegrityError):
            await session.commit()


async def test_sku_is_unique(sessionmaker: Sessions) -> None:
    async with sessionmaker() as session:
        session.add(Product(sku="DUP", name="a", price=Decimal(1), currency="USD"))
        session.add(Product(sku="DUP", name="b", price=Decimal(1), currency="USD"))
        with pytest.raises(IntegrityError):
            await session.commit()


async def test_webhook_fingerprint_is_unique_but_external_id_is_not(sessionmaker: Sessions) -> None:
    def log(fingerprint: str, status: str) -> WebhookLog:
        return WebhookLog(
            provider="nowpayments",
            external_id="5077125051",
            provider_status=status,
            fingerprint=fingerprint,
            raw_body="{}",
            raw_payload={},
            created_at=datetime.now(UTC),
        )

    async with sessionmaker() as session:
        # One payment sends several notifications: same external id, other bodies.
        session.add_all([log("a" * 64, "waiting"), log("b" * 64, "finished")])
        await session.commit()
        session.add(log("a" * 64, "waiting"))
        with pytest.raises(IntegrityError):
            await session.commit()


async def test_status_check_constraint_refuses_unknown_words(sessionmaker: Sessions) -> None:
    from sqlalchemy import text

    async with sessionmaker() as session:
        _, order = await _order(session)
        await session.commit()
        with pytest.raises(IntegrityError):
            await session.execute(
                text("UPDATE orders SET status = 'teleported' WHERE id = :id"),
                {"id": order.id.hex if session.get_bind().dialect.name == "sqlite" else order.id},
            )


async def test_webhook_logs_refuse_the_duplicate_status(sessionmaker: Sessions) -> None:
    """Redeliveries are counted on their row (`deliveries`): `duplicate` is no status."""
    from sqlalchemy import text

    async with sessionmaker() as session:
        log = WebhookLog(
            provider="nowpayments", fingerprint="c" * 64, raw_body="{}", raw_payload={}
        )
        session.add(log)
        await session.commit()
        log_id = log.id.hex if session.get_bind().dialect.name == "sqlite" else log.id
        await session.execute(
            text("UPDATE webhook_logs SET status = 'failed' WHERE id = :id"), {"id": log_id}
        )
        with pytest.raises(IntegrityError):
            await session.execute(
                text("UPDATE webhook_logs SET status = 'duplicate' WHERE id = :id"),
                {"id": log_id},
            )

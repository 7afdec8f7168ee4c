"""Orders and payments put straight into the database, for tests of what happens next."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cryptocheckout.catalogue.models import LicenceKey, Product, StockHold
from cryptocheckout.catalogue.service import add_keys
from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.encryption import KeyRing
from cryptocheckout.orders.models import Order, OrderItem, OrderStatus
from cryptocheckout.payments.models import Payment, PaymentKind, PaymentStatus

TEST_KEY_RING = KeyRing.parse(os.environ["KEYS_ENCRYPTION_KEY"])


@dataclass(frozen=True)
class Paying:
    order_id: uuid.UUID
    payment_id: uuid.UUID
    product_id: uuid.UUID
    external_id: str | None
    price: Decimal
    pay_amount: Decimal


async def paying_order(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    price: str = "12.50",
    pay_amount: str = "0.00045",
    external_id: str | None = "5077125051",
    invoice_id: str | None = None,
    kind: PaymentKind = PaymentKind.PAYMENT,
    quantity: int = 1,
    keys: int = 3,
) -> Paying:
    """An order with one waiting NOWPayments payment, and `keys` licence keys in stock."""
    async with sessionmaker() as session:
        product = Product(
            sku=f"SKU-{uuid.uuid4().hex[:8]}", name="Game", price=Decimal(price), currency="USD"
        )
        session.add(product)
        await session.flush()
        await add_keys(
            session, TEST_KEY_RING, product.id, [f"KEY-{uuid.uuid4().hex}" for _ in range(keys)]
        )
        stock = list(
            (
                await session.execute(select(LicenceKey).where(LicenceKey.product_id == product.id))
            ).scalars()
        )
        order = Order(
            email="buyer@example.com",
            status=OrderStatus.WAITING,
            total=Decimal(price) * quantity,
            currency="USD",
            access_token="token",
            items=[
                OrderItem(
                    product_id=product.id,
                    position=0,
                    sku=product.sku,
                    name=product.name,
                    quantity=quantity,
                    unit_price=product.price,
                )
            ],
        )
        session.add(order)
        await session.flush()
        # held from checkout, as `orders.service.create_order` holds them
        session.add_all(
            StockHold(
                licence_key_id=key.id,
                product_id=product.id,
                order_id=order.id,
                expires_at=utcnow() + timedelta(minutes=40),
            )
            for key in stock[:quantity]
        )
        payment = Payment(
            order_id=order.id,
            kind=kind,
            status=PaymentStatus.WAITING,
            external_id=external_id,
            invoice_id=invoice_id,
            price_amount=order.total,
            price_currency="USD",
            pay_amount=Decimal(pay_amount) if kind is PaymentKind.PAYMENT else None,
            pay_currency="btc" if kind is PaymentKind.PAYMENT else None,
        )
        session.add(payment)
        await session.commit()
        return Paying(
            order.id, payment.id, product.id, external_id, order.total, Decimal(pay_amount)
        )

from __future__ import annotations

import enum
import uuid
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, Integer, String, Uuid, func, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from cryptocheckout.kit.db import Base
from cryptocheckout.kit.models import Timestamps, UUIDPrimaryKey, status_enum
from cryptocheckout.kit.types import Money


class OrderStatus(enum.StrEnum):
    CREATED = "created"
    WAITING = "waiting"
    CONFIRMING = "confirming"
    PAID = "paid"
    FULFILLED = "fulfilled"
    UNDERPAID = "underpaid"
    EXPIRED = "expired"
    FAILED = "failed"
    REFUNDED = "refunded"


class Order(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "orders"
    # Staff look customers up by e-mail, case-insensitively (admin lists).
    __table_args__ = (Index("ix_orders_email_lower", func.lower(text("email"))),)

    email: Mapped[str] = mapped_column(String(320))
    status: Mapped[OrderStatus] = mapped_column(
        status_enum(OrderStatus, "order_status"), default=OrderStatus.CREATED, index=True
    )
    total: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(10))
    # A bearer capability for the customer's order page; compared in constant time.
    access_token: Mapped[str] = mapped_column(String(64))

    items: Mapped[list[OrderItem]] = relationship(
        back_populates="order",
        lazy="raise",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="OrderItem.position",
    )


class OrderItem(UUIDPrimaryKey, Base):
    __tablename__ = "order_items"

    order_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("orders.id", ondelete="CASCADE"), index=True
    )
    product_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("products.id", ondelete="RESTRICT"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    sku: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[Decimal] = mapped_column(Money)

    order: Mapped[Order] = relationship(back_populates="items", lazy="raise")

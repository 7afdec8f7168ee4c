from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import Boolean, ForeignKey, Index, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from cryptocheckout.kit.db import Base
from cryptocheckout.kit.models import CreatedAt, Timestamps, UUIDPrimaryKey
from cryptocheckout.kit.types import Money, UTCDateTime


class Product(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "products"

    sku: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    price: Mapped[Decimal] = mapped_column(Money)
    currency: Mapped[str] = mapped_column(String(10))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class LicenceKey(UUIDPrimaryKey, CreatedAt, Base):
    """One deliverable key of a product; `order_id` is set when it is handed to an order.

    The key itself is only stored encrypted (`kit/encryption.py`): `ciphertext` names the ring
    key that made it (also in `key_id`, for rotation), and `key_hash`, a keyed hash, finds
    duplicates within the product without the plain key.
    """

    __tablename__ = "licence_keys"
    __table_args__ = (
        UniqueConstraint("product_id", "key_hash"),
        Index(None, "product_id", "order_id"),
        Index(None, "key_id"),
    )

    product_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("products.id", ondelete="CASCADE")
    )
    ciphertext: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64))
    order_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("orders.id", ondelete="SET NULL"), default=None
    )
    assigned_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    def __repr__(self) -> str:  # the default repr would print the ciphertext; keep logs clean
        return f"LicenceKey(id={self.id!s}, product_id={self.product_id!s})"


class StockHold(UUIDPrimaryKey, CreatedAt, Base):
    """One licence key held for an order from checkout until it is paid or the hold lapses.

    A row per key, never a counter: the unique key makes it impossible for two orders to hold
    one key. `expires_at` is when the hold lapses (the worker deletes it, and checkouts stop
    counting it at once); NULL once the order is paid: kept until its keys are assigned.
    """

    __tablename__ = "stock_holds"

    licence_key_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("licence_keys.id", ondelete="CASCADE"), unique=True
    )
    product_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("products.id", ondelete="CASCADE"), index=True
    )
    order_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("orders.id", ondelete="CASCADE"), index=True
    )
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None, index=True)

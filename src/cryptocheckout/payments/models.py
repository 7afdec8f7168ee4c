from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, Uuid, false, text
from sqlalchemy.orm import Mapped, mapped_column

from cryptocheckout.kit.db import Base
from cryptocheckout.kit.models import CreatedAt, Timestamps, UUIDPrimaryKey, status_enum
from cryptocheckout.kit.types import JSONType, Money, UTCDateTime


class PaymentStatus(enum.StrEnum):
    CREATED = "created"
    WAITING = "waiting"
    CONFIRMING = "confirming"
    CONFIRMED = "confirmed"
    FINISHED = "finished"
    UNDERPAID = "underpaid"
    EXPIRED = "expired"
    FAILED = "failed"
    REFUNDED = "refunded"


# A payment in one of these may still be paid: an order has at most one of them.
OPEN_PAYMENT_STATUSES = (
    PaymentStatus.CREATED,
    PaymentStatus.WAITING,
    PaymentStatus.CONFIRMING,
    PaymentStatus.CONFIRMED,
)
# Payments the provider starts on its own (repeated deposits, another payment on an invoice)
# carry parent_external_id and do not count: the rule is about payments the shop opens.
_OPEN_SQL = "status IN ({}) AND parent_external_id IS NULL".format(
    ", ".join(f"'{s.value}'" for s in OPEN_PAYMENT_STATUSES)
)


class PaymentKind(enum.StrEnum):
    PAYMENT = "payment"  # POST /v1/payment: the coin is chosen up front
    INVOICE = "invoice"  # POST /v1/invoice: the customer picks the coin on NOWPayments' page


class Payment(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "payments"
    __table_args__ = (
        Index(None, "order_id", "status"),
        # Staff's lists by status, newest first (keyset pages): one index range, any size.
        Index(None, "status", "created_at"),
        Index(
            "uq_payments_open_per_order",
            "order_id",
            unique=True,
            postgresql_where=text(_OPEN_SQL),
            sqlite_where=text(_OPEN_SQL),
        ),
    )

    order_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("orders.id", ondelete="CASCADE"), index=True
    )
    provider: Mapped[str] = mapped_column(
        String(32), default="nowpayments", server_default="nowpayments"
    )
    kind: Mapped[PaymentKind] = mapped_column(status_enum(PaymentKind, "payment_kind"))
    # NOWPayments' payment_id; for an invoice it arrives with the first notification.
    external_id: Mapped[str | None] = mapped_column(String(64), unique=True, default=None)
    invoice_id: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    # Set on a repeated deposit: the payment_id it repeats.
    parent_external_id: Mapped[str | None] = mapped_column(String(64), default=None)
    status: Mapped[PaymentStatus] = mapped_column(
        status_enum(PaymentStatus, "payment_status"), default=PaymentStatus.CREATED, index=True
    )
    provider_status: Mapped[str | None] = mapped_column(String(32), default=None)
    raw_payload: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    price_amount: Mapped[Decimal] = mapped_column(Money)
    price_currency: Mapped[str] = mapped_column(String(10))
    pay_amount: Mapped[Decimal | None] = mapped_column(Money, default=None)
    pay_currency: Mapped[str | None] = mapped_column(String(20), default=None)
    pay_address: Mapped[str | None] = mapped_column(String(256), default=None)
    payin_extra_id: Mapped[str | None] = mapped_column(String(128), default=None)
    actually_paid: Mapped[Decimal | None] = mapped_column(Money, default=None)
    # What this provider payment credits its order, in the order's currency: one credit per
    # provider payment (a row is one NOWPayments payment_id), raised only forward
    # (`state_machine.credit_payment`); each change is in the audit trail.
    credit: Mapped[Decimal] = mapped_column(Money, default=Decimal(0), server_default="0")
    # NOWPayments' purchase_id: a further payment for what is missing is linked to it.
    purchase_id: Mapped[str | None] = mapped_column(String(64), default=None)
    confirmations: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    payment_url: Mapped[str | None] = mapped_column(String(1024), default=None)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    # Last time its state was read from NOWPayments' API (reconciliation).
    polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Held for staff: a conflict (price or currency not ours) or an overpayment.
    needs_review: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    review_reason: Mapped[str | None] = mapped_column(Text, default=None)


class ChangeCause(enum.StrEnum):
    API = "api"
    NOTIFICATION = "notification"
    POLL = "poll"
    ADMIN = "admin"
    WORKER = "worker"


class StatusChange(UUIDPrimaryKey, CreatedAt, Base):
    """The audit trail: every status change of an order or a payment, and what caused it."""

    __tablename__ = "status_changes"
    __table_args__ = (Index(None, "subject", "subject_id"),)

    subject: Mapped[str] = mapped_column(String(16))  # "order" or "payment"
    subject_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    order_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("orders.id", ondelete="CASCADE"), index=True
    )
    from_status: Mapped[str | None] = mapped_column(String(20), default=None)
    to_status: Mapped[str] = mapped_column(String(20))
    cause: Mapped[ChangeCause] = mapped_column(status_enum(ChangeCause, "change_cause"))
    # The webhook log, job or admin action that caused it.
    cause_ref: Mapped[str | None] = mapped_column(String(64), default=None)
    note: Mapped[str | None] = mapped_column(Text, default=None)

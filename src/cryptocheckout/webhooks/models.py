from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from cryptocheckout.kit.db import Base
from cryptocheckout.kit.models import CreatedAt, UUIDPrimaryKey, status_enum
from cryptocheckout.kit.types import JSONType, UTCDateTime


class WebhookLogStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSED = "processed"
    FAILED = "failed"
    # No `duplicate`: an exact redelivery is counted on its row (`deliveries`), never stored twice.


class WebhookLog(UUIDPrimaryKey, CreatedAt, Base):
    """One distinct notification body. Exact redeliveries are counted on the same row."""

    __tablename__ = "webhook_logs"
    __table_args__ = (
        Index(None, "provider", "status"),
        # The workers' queue: without it, finding the oldest pending row walks every
        # processed one whenever the planner's statistics lag behind a burst.
        Index(
            "ix_webhook_logs_pending",
            "created_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )

    provider: Mapped[str] = mapped_column(String(32), index=True)
    # The provider's payment id, where the body names one (payouts and junk do not).
    external_id: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    provider_status: Mapped[str | None] = mapped_column(String(32), default=None)
    status: Mapped[WebhookLogStatus] = mapped_column(
        status_enum(WebhookLogStatus, "webhook_log_status"),
        default=WebhookLogStatus.PENDING,
        index=True,
    )
    # SHA-256 of the parsed content with sorted keys (webhooks/ingest/body.py), not of the
    # delivered bytes: a redelivery has the same one even if a proxy re-spaced the body.
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    raw_body: Mapped[str] = mapped_column(Text)
    raw_payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    deliveries: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_received_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class RejectedWebhook(UUIDPrimaryKey, CreatedAt, Base):
    """A delivery refused before storage (bad signature, bad body): a bounded log for staff."""

    __tablename__ = "rejected_webhooks"

    provider: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(200))
    remote_addr: Mapped[str | None] = mapped_column(String(64), default=None)
    body_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    body_size: Mapped[int] = mapped_column(Integer, default=0)

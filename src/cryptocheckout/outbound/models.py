"""Endpoints of the shop's own systems and the log of every delivery attempt."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from cryptocheckout.kit.db import Base
from cryptocheckout.kit.models import CreatedAt, Timestamps, UUIDPrimaryKey
from cryptocheckout.kit.types import JSONType, UTCDateTime


class WebhookEndpoint(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "webhook_endpoints"

    url: Mapped[str] = mapped_column(String(2000))
    # Event types to send (`order.paid`, ...); NULL sends every type.
    events: Mapped[list[str] | None] = mapped_column(JSONType, default=None)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str | None] = mapped_column(String(500), default=None)
    # `whsec_<base64>`. Never logged, never listed: shown at creation and on rotation only.
    secret: Mapped[str] = mapped_column(String(200))
    # After a rotation the previous secret signs alongside the new one until it expires.
    previous_secret: Mapped[str | None] = mapped_column(String(200), default=None)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # The first failure since the last success: the clock of the disable-after-days rule.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    disabled_reason: Mapped[str | None] = mapped_column(String(500), default=None)

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets that sign a message sent at `now`: the current one first."""
        secrets = [self.secret]
        expires = self.previous_secret_expires_at
        if self.previous_secret and expires is not None and now < expires:
            secrets.append(self.previous_secret)
        return secrets

    def takes(self, event_type: str) -> bool:
        return self.enabled and (self.events is None or event_type in self.events)


class WebhookDelivery(UUIDPrimaryKey, CreatedAt, Base):
    """One attempt to deliver one event to one endpoint (pruned after 30 days)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (Index(None, "endpoint_id", "created_at"),)

    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    event_type: Mapped[str] = mapped_column(String(64))
    webhook_id: Mapped[str] = mapped_column(String(100))
    # NULL when no answer came (refused, timed out, address not allowed).
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    response_excerpt: Mapped[str | None] = mapped_column(Text, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    duration_ms: Mapped[int | None] = mapped_column(Integer, default=None)

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

"""The console's own tables: staff sessions and the log of what staff did."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from cryptocheckout.kit.db import Base
from cryptocheckout.kit.models import CreatedAt, UUIDPrimaryKey
from cryptocheckout.kit.types import UTCDateTime


class AdminSession(UUIDPrimaryKey, CreatedAt, Base):
    """A signed-in browser. The cookie holds a random secret; only its SHA-256 is stored here,
    so a copy of this table signs nobody in."""

    __tablename__ = "admin_sessions"

    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Which ADMIN_TOKEN signed it in (an HMAC of the token, never the token): a changed token
    # ends every session at once.
    token_id: Mapped[str] = mapped_column(String(64))
    # Who did it, as the audit trail names them ("session 1a2b3c4d").
    label: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class AdminAction(UUIDPrimaryKey, CreatedAt, Base):
    """One thing staff did (replay, retry, import keys, mark as paid...), who and why."""

    __tablename__ = "admin_actions"

    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    subject: Mapped[str] = mapped_column(String(16))  # order, payment, webhook_log, job, product
    subject_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True, default=None)
    # The order it concerns, where there is one: the order's and its payments' timelines show it.
    order_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid, ForeignKey("orders.id", ondelete="CASCADE"), index=True, default=None
    )
    note: Mapped[str | None] = mapped_column(Text, default=None)
    outcome: Mapped[str | None] = mapped_column(String(200), default=None)

"""What staff see of a delivery: how often the keys were viewed, how often a link was re-sent."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, Integer, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from cryptocheckout.kit.db import Base
from cryptocheckout.kit.models import Timestamps
from cryptocheckout.kit.types import UTCDateTime


class Delivery(Timestamps, Base):
    """One row per order whose delivery page was opened or whose link was asked for again."""

    __tablename__ = "deliveries"

    order_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True
    )
    views: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_viewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # Fresh links mailed on request; also numbers each request's e-mail event (`resend-<n>`).
    links_requested: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_link_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

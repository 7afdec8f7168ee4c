from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Index, Integer, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from cryptocheckout.kit.db import Base
from cryptocheckout.kit.models import Timestamps, UUIDPrimaryKey, status_enum
from cryptocheckout.kit.types import JSONType, UTCDateTime


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DEAD = "dead"


class Job(UUIDPrimaryKey, Timestamps, Base):
    """Work for the background workers, enqueued in the same transaction as its cause."""

    __tablename__ = "jobs"
    __table_args__ = (Index(None, "status", "run_at"),)

    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    # What the job concerns (an order, a payment), so staff find a payment's jobs by index.
    subject_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True, default=None)
    status: Mapped[JobStatus] = mapped_column(
        status_enum(JobStatus, "job_status"), default=JobStatus.QUEUED
    )
    # At most one job per key, ever: e.g. one fulfilment per order.
    dedupe_key: Mapped[str | None] = mapped_column(String(200), unique=True, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    max_attempts: Mapped[int] = mapped_column(Integer, default=10, server_default="10")
    run_at: Mapped[datetime] = mapped_column(UTCDateTime)
    locked_by: Mapped[str | None] = mapped_column(String(128), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

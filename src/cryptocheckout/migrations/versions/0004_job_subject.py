"""jobs.subject_id; webhook_logs.status without `duplicate`

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 16:00:00

A job names what it concerns (the order or the payment) in an indexed column, so a payment's
page finds its jobs without scanning `dedupe_key LIKE '%:<id>'` (which also missed poll jobs).
Exact redeliveries of a notification are counted on its row (`deliveries`), so `duplicate` is
never a status: the CHECK constraint stops allowing it.
"""

import json
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECK = "ck_webhook_logs_webhook_log_status"


def _status(*values: str) -> sa.Enum:
    return sa.Enum(
        *values, name="webhook_log_status", native_enum=False, create_constraint=True, length=20
    )


OLD_STATUS = _status("pending", "processed", "failed", "duplicate")
NEW_STATUS = _status("pending", "processed", "failed")


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("subject_id", sa.Uuid(), nullable=True))
        batch_op.create_index(batch_op.f("ix_jobs_subject_id"), ["subject_id"], unique=False)
    _backfill_subjects()
    _webhook_status(OLD_STATUS, NEW_STATUS, "('pending', 'processed', 'failed')")


def downgrade() -> None:
    _webhook_status(NEW_STATUS, OLD_STATUS, "('pending', 'processed', 'failed', 'duplicate')")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_subject_id"))
        batch_op.drop_column("subject_id")


def _backfill_subjects() -> None:
    """Existing jobs name their subject in the payload: an order's id, or a payment's."""
    connection = op.get_bind()
    jobs = sa.table(
        "jobs",
        sa.column("id", sa.Uuid()),
        sa.column("payload", sa.JSON()),
        sa.column("subject_id", sa.Uuid()),
    )
    for job_id, payload in connection.execute(sa.select(jobs.c.id, jobs.c.payload)).all():
        if isinstance(payload, str):
            payload = json.loads(payload)
        subject = (payload or {}).get("order_id") or (payload or {}).get("payment_id")
        try:
            subject_id = uuid.UUID(str(subject))
        except ValueError:
            continue
        connection.execute(sa.update(jobs).where(jobs.c.id == job_id).values(subject_id=subject_id))


def _webhook_status(old: sa.Enum, new: sa.Enum, allowed: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite cannot alter a CHECK: batch mode copies the table with the new column type,
        # whose constraint replaces the old one.
        with op.batch_alter_table("webhook_logs", schema=None) as batch_op:
            batch_op.alter_column("status", existing_type=old, type_=new, existing_nullable=False)
        return
    op.drop_constraint(op.f(CHECK), "webhook_logs", type_="check")
    op.create_check_constraint(op.f(CHECK), "webhook_logs", sa.text(f"status IN {allowed}"))

"""payments.polled_at

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 22:40:00

When a payment's state was last read from NOWPayments' API by reconciliation.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cryptocheckout.kit.types

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "polled_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=True
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_column("polled_at")

"""payments.credit and payments.purchase_id

Revision ID: 0008
Revises: 0004
Create Date: 2026-11-30 17:00:00

Each provider payment credits its order by what actually arrived, in the order's currency
(`payments.credit`, raised only forward; every change is in `status_changes`, subject
`credit`). `purchase_id` is NOWPayments' purchase a payment for the rest is linked to.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cryptocheckout.kit.types

revision: str = "0008"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "credit",
                cryptocheckout.kit.types.Money(precision=20, scale=8),
                server_default="0",
                nullable=False,
            )
        )
        batch_op.add_column(sa.Column("purchase_id", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_column("purchase_id")
        batch_op.drop_column("credit")

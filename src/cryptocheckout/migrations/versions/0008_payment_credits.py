"""payments.credit and payments.purchase_id; stock_holds

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 17:00:00

Each provider payment credits its order by what actually arrived, in the order's currency
(`payments.credit`, raised only forward; every change is in `status_changes`, subject
`credit`). `purchase_id` is NOWPayments' purchase a payment for the rest is linked to.
`stock_holds`: one row per licence key held for an order from checkout (unique per key).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cryptocheckout.kit.types

revision: str = "0008"
down_revision: str | None = "0007"
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
    op.create_table(
        "stock_holds",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("licence_key_id", sa.Uuid(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("expires_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["licence_key_id"],
            ["licence_keys.id"],
            name=op.f("fk_stock_holds_licence_key_id_licence_keys"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_stock_holds_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
            name=op.f("fk_stock_holds_product_id_products"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stock_holds")),
        sa.UniqueConstraint("licence_key_id", name=op.f("uq_stock_holds_licence_key_id")),
    )
    with op.batch_alter_table("stock_holds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stock_holds_created_at"), ["created_at"])
        batch_op.create_index(batch_op.f("ix_stock_holds_expires_at"), ["expires_at"])
        batch_op.create_index(batch_op.f("ix_stock_holds_order_id"), ["order_id"])
        batch_op.create_index(batch_op.f("ix_stock_holds_product_id"), ["product_id"])


def downgrade() -> None:
    op.drop_table("stock_holds")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_column("purchase_id")
        batch_op.drop_column("credit")

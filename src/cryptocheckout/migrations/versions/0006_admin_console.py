"""admin_sessions and admin_actions for the admin console; orders by lower(email)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 16:30:00

Orders get an index on lower(email): staff find a customer's orders and payments by e-mail,
case-insensitively, and without it that filter scans every order (650 ms at 10^6 orders
against 10 ms at 10^4, bench/admin_lists_bench.py). Payments get (status, created_at), the
shape of the status filter's keyset pages.

The console signs staff in with server-side sessions (so `Sign out` and a changed
ADMIN_TOKEN end a session at once, not when a cookie expires) and records every action
staff take, who and why, for the order's timeline.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import cryptocheckout.kit.types

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "admin_sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("token_id", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=32), nullable=False),
        _utc("expires_at"),
        _utc("ended_at", nullable=True),
        _utc("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_sessions")),
        sa.UniqueConstraint("secret_hash", name=op.f("uq_admin_sessions_secret_hash")),
    )
    with op.batch_alter_table("admin_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_admin_sessions_created_at"), ["created_at"])
    op.create_table(
        "admin_actions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("actor", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=16), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=True),
        sa.Column("order_id", sa.Uuid(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("outcome", sa.String(length=200), nullable=True),
        _utc("created_at"),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_admin_actions_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admin_actions")),
    )
    with op.batch_alter_table("admin_actions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_admin_actions_created_at"), ["created_at"])
        batch_op.create_index(batch_op.f("ix_admin_actions_order_id"), ["order_id"])
        batch_op.create_index(batch_op.f("ix_admin_actions_subject_id"), ["subject_id"])

    op.create_index("ix_orders_email_lower", "orders", [sa.text("lower(email)")])
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payments_status_created_at"), ["status", "created_at"])


def downgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payments_status_created_at"))
    op.drop_index("ix_orders_email_lower", table_name="orders")
    op.drop_table("admin_actions")
    op.drop_table("admin_sessions")

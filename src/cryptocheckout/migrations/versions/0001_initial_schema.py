"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26 21:25:39.181728

The seed's tables (orders, order_items, payments, webhook_logs) with their indexes, plus the
catalogue, the job queue, idempotency keys, the audit trail and the rejected-delivery log.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import cryptocheckout.kit.types

JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("scope", sa.String(length=100), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "in_progress",
                "completed",
                name="idempotency_state",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column(
            "locked_until", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "expires_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", JSON_TYPE, nullable=True),
        sa.Column(
            "created_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.UniqueConstraint("scope", "key", name=op.f("uq_idempotency_keys_scope_key")),
    )
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_idempotency_keys_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_idempotency_keys_expires_at"), ["expires_at"], unique=False
        )

    op.create_table(
        "jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("payload", JSON_TYPE, nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "queued",
                "running",
                "succeeded",
                "dead",
                name="job_status",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("dedupe_key", sa.String(length=200), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_attempts", sa.Integer(), server_default="10", nullable=False),
        sa.Column("run_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("locked_by", sa.String(length=128), nullable=True),
        sa.Column(
            "lease_expires_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "finished_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "updated_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "created_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_jobs_dedupe_key")),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_created_at"), ["created_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_jobs_status_run_at"), ["status", "run_at"], unique=False
        )

    op.create_table(
        "orders",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "created",
                "waiting",
                "confirming",
                "paid",
                "fulfilled",
                "underpaid",
                "expired",
                "failed",
                "refunded",
                name="order_status",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("total", cryptocheckout.kit.types.Money(precision=20, scale=8), nullable=False),
        sa.Column("currency", sa.String(length=10), nullable=False),
        sa.Column("access_token", sa.String(length=64), nullable=False),
        sa.Column(
            "updated_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "created_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_orders")),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_orders_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_orders_status"), ["status"], unique=False)

    op.create_table(
        "products",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("price", cryptocheckout.kit.types.Money(precision=20, scale=8), nullable=False),
        sa.Column("currency", sa.String(length=10), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column(
            "updated_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "created_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_products")),
        sa.UniqueConstraint("sku", name=op.f("uq_products_sku")),
    )
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_products_created_at"), ["created_at"], unique=False)

    op.create_table(
        "rejected_webhooks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("remote_addr", sa.String(length=64), nullable=True),
        sa.Column("body_sha256", sa.String(length=64), nullable=True),
        sa.Column("body_size", sa.Integer(), nullable=False),
        sa.Column(
            "created_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rejected_webhooks")),
    )
    with op.batch_alter_table("rejected_webhooks", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_rejected_webhooks_created_at"), ["created_at"], unique=False
        )

    op.create_table(
        "webhook_logs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=64), nullable=True),
        sa.Column("provider_status", sa.String(length=32), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "processed",
                "failed",
                "duplicate",
                name="webhook_log_status",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("raw_body", sa.Text(), nullable=False),
        sa.Column("raw_payload", JSON_TYPE, nullable=False),
        sa.Column("deliveries", sa.Integer(), server_default="1", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "last_received_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "processed_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "created_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_logs")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_webhook_logs_fingerprint")),
    )
    with op.batch_alter_table("webhook_logs", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_webhook_logs_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_webhook_logs_external_id"), ["external_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_webhook_logs_provider"), ["provider"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_webhook_logs_provider_status"), ["provider", "status"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_webhook_logs_status"), ["status"], unique=False)

    op.create_table(
        "licence_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=True),
        sa.Column(
            "assigned_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "created_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_licence_keys_order_id_orders"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
            name=op.f("fk_licence_keys_product_id_products"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_licence_keys")),
        sa.UniqueConstraint("product_id", "secret", name=op.f("uq_licence_keys_product_id_secret")),
    )
    with op.batch_alter_table("licence_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_licence_keys_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_licence_keys_product_id_order_id"),
            ["product_id", "order_id"],
            unique=False,
        )

    op.create_table(
        "order_items",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("sku", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column(
            "unit_price", cryptocheckout.kit.types.Money(precision=20, scale=8), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_order_items_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["product_id"],
            ["products.id"],
            name=op.f("fk_order_items_product_id_products"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_items")),
    )
    with op.batch_alter_table("order_items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_order_items_order_id"), ["order_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_order_items_product_id"), ["product_id"], unique=False)

    op.create_table(
        "payments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("provider", sa.String(length=32), server_default="nowpayments", nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "payment",
                "invoice",
                name="payment_kind",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("external_id", sa.String(length=64), nullable=True),
        sa.Column("invoice_id", sa.String(length=64), nullable=True),
        sa.Column("parent_external_id", sa.String(length=64), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "created",
                "waiting",
                "confirming",
                "confirmed",
                "finished",
                "underpaid",
                "expired",
                "failed",
                "refunded",
                name="payment_status",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("provider_status", sa.String(length=32), nullable=True),
        sa.Column("raw_payload", JSON_TYPE, nullable=True),
        sa.Column(
            "price_amount", cryptocheckout.kit.types.Money(precision=20, scale=8), nullable=False
        ),
        sa.Column("price_currency", sa.String(length=10), nullable=False),
        sa.Column(
            "pay_amount", cryptocheckout.kit.types.Money(precision=20, scale=8), nullable=True
        ),
        sa.Column("pay_currency", sa.String(length=20), nullable=True),
        sa.Column("pay_address", sa.String(length=256), nullable=True),
        sa.Column("payin_extra_id", sa.String(length=128), nullable=True),
        sa.Column(
            "actually_paid", cryptocheckout.kit.types.Money(precision=20, scale=8), nullable=True
        ),
        sa.Column("confirmations", sa.Integer(), server_default="0", nullable=False),
        sa.Column("payment_url", sa.String(length=1024), nullable=True),
        sa.Column("expires_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("needs_review", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("review_reason", sa.Text(), nullable=True),
        sa.Column(
            "updated_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "created_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_payments_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.UniqueConstraint("external_id", name=op.f("uq_payments_external_id")),
    )
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_payments_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_payments_invoice_id"), ["invoice_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_payments_order_id"), ["order_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_payments_order_id_status"), ["order_id", "status"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_payments_status"), ["status"], unique=False)
        batch_op.create_index(
            "uq_payments_open_per_order",
            ["order_id"],
            unique=True,
            postgresql_where=sa.text(
                "status IN ('created', 'waiting', 'confirming', 'confirmed') AND parent_external_id IS NULL"
            ),
            sqlite_where=sa.text(
                "status IN ('created', 'waiting', 'confirming', 'confirmed') AND parent_external_id IS NULL"
            ),
        )

    op.create_table(
        "status_changes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("subject", sa.String(length=16), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("from_status", sa.String(length=20), nullable=True),
        sa.Column("to_status", sa.String(length=20), nullable=False),
        sa.Column(
            "cause",
            sa.Enum(
                "api",
                "notification",
                "poll",
                "admin",
                "worker",
                name="change_cause",
                native_enum=False,
                create_constraint=True,
                length=20,
            ),
            nullable=False,
        ),
        sa.Column("cause_ref", sa.String(length=64), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column(
            "created_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_status_changes_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_status_changes")),
    )
    with op.batch_alter_table("status_changes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_status_changes_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_status_changes_order_id"), ["order_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_status_changes_subject_subject_id"),
            ["subject", "subject_id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("status_changes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_status_changes_subject_subject_id"))
        batch_op.drop_index(batch_op.f("ix_status_changes_order_id"))
        batch_op.drop_index(batch_op.f("ix_status_changes_created_at"))

    op.drop_table("status_changes")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_payments_open_per_order",
            postgresql_where=sa.text(
                "status IN ('created', 'waiting', 'confirming', 'confirmed') AND parent_external_id IS NULL"
            ),
            sqlite_where=sa.text(
                "status IN ('created', 'waiting', 'confirming', 'confirmed') AND parent_external_id IS NULL"
            ),
        )
        batch_op.drop_index(batch_op.f("ix_payments_status"))
        batch_op.drop_index(batch_op.f("ix_payments_order_id_status"))
        batch_op.drop_index(batch_op.f("ix_payments_order_id"))
        batch_op.drop_index(batch_op.f("ix_payments_invoice_id"))
        batch_op.drop_index(batch_op.f("ix_payments_created_at"))

    op.drop_table("payments")
    with op.batch_alter_table("order_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_order_items_product_id"))
        batch_op.drop_index(batch_op.f("ix_order_items_order_id"))

    op.drop_table("order_items")
    with op.batch_alter_table("licence_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_licence_keys_product_id_order_id"))
        batch_op.drop_index(batch_op.f("ix_licence_keys_created_at"))

    op.drop_table("licence_keys")
    with op.batch_alter_table("webhook_logs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_webhook_logs_status"))
        batch_op.drop_index(batch_op.f("ix_webhook_logs_provider_status"))
        batch_op.drop_index(batch_op.f("ix_webhook_logs_provider"))
        batch_op.drop_index(batch_op.f("ix_webhook_logs_external_id"))
        batch_op.drop_index(batch_op.f("ix_webhook_logs_created_at"))

    op.drop_table("webhook_logs")
    with op.batch_alter_table("rejected_webhooks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rejected_webhooks_created_at"))

    op.drop_table("rejected_webhooks")
    with op.batch_alter_table("products", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_products_created_at"))

    op.drop_table("products")
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_orders_status"))
        batch_op.drop_index(batch_op.f("ix_orders_created_at"))

    op.drop_table("orders")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_status_run_at"))
        batch_op.drop_index(batch_op.f("ix_jobs_created_at"))

    op.drop_table("jobs")
    with op.batch_alter_table("idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_idempotency_keys_expires_at"))
        batch_op.drop_index(batch_op.f("ix_idempotency_keys_created_at"))

    op.drop_table("idempotency_keys")

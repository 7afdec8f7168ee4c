"""Licence keys encrypted at rest; per-order delivery counters

Revision ID: 0005
Revises: 0003
Create Date: 2026-11-30 16:00:00

Replaces `licence_keys.secret` (plain text) by `ciphertext` (AES-GCM, naming its key),
`key_id` and `key_hash` (keyed hash, unique per product), encrypting the rows already there,
and adds `deliveries` (views of the keys page, fresh links asked for).

Existing keys need the key ring: `cryptocheckout migrate` passes KEYS_ENCRYPTION_KEY from the
settings (the environment or .env), as it passes DATABASE_URL. A database without licence keys
(every fresh one, the tests') migrates without it.
"""

import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

import cryptocheckout.kit.types
from cryptocheckout.kit.encryption import SETTING, KeyRing, KeyRingError

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 500

licence_keys = sa.table(
    "licence_keys",
    sa.column("id", sa.Uuid()),
    sa.column("product_id", sa.Uuid()),
    sa.column("secret", sa.Text()),
    sa.column("ciphertext", sa.Text()),
    sa.column("key_id", sa.String(16)),
    sa.column("key_hash", sa.String(64)),
)


def _key_ring() -> KeyRing:
    setting = context.config.attributes.get("keys_encryption_key") or os.environ.get(SETTING, "")
    if not setting:
        raise KeyRingError(
            f"{SETTING} is needed to migrate the licence keys already stored: set it and run "
            "the migration again"
        )
    return KeyRing.parse(setting)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        # The plain keys' pages are freed below: zero them rather than leave the keys on disk.
        op.execute("PRAGMA secure_delete = ON")
    with op.batch_alter_table("licence_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("ciphertext", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("key_id", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("key_hash", sa.String(length=64), nullable=True))

    if bind.execute(sa.select(sa.func.count()).select_from(licence_keys)).scalar_one():
        ring = _key_ring()
        while True:
            rows = bind.execute(
                sa.select(licence_keys.c.id, licence_keys.c.product_id, licence_keys.c.secret)
                .where(licence_keys.c.ciphertext.is_(None))
                .limit(BATCH)
            ).all()
            if not rows:
                break
            for row_id, product_id, secret in rows:
                sealed = ring.seal(secret, product_id=product_id.bytes, row_id=row_id.bytes)
                bind.execute(
                    licence_keys.update()
                    .where(licence_keys.c.id == row_id)
                    .values(
                        ciphertext=sealed.ciphertext,
                        key_id=sealed.key_id,
                        key_hash=sealed.key_hash,
                    )
                )

    with op.batch_alter_table("licence_keys", schema=None) as batch_op:
        batch_op.drop_constraint("uq_licence_keys_product_id_secret", type_="unique")
        batch_op.drop_column("secret")
        batch_op.alter_column("ciphertext", existing_type=sa.Text(), nullable=False)
        batch_op.alter_column("key_id", existing_type=sa.String(length=16), nullable=False)
        batch_op.alter_column("key_hash", existing_type=sa.String(length=64), nullable=False)
        batch_op.create_unique_constraint(
            batch_op.f("uq_licence_keys_product_id_key_hash"), ["product_id", "key_hash"]
        )
        batch_op.create_index(batch_op.f("ix_licence_keys_key_id"), ["key_id"], unique=False)

    op.create_table(
        "deliveries",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("views", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "last_viewed_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("links_requested", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "last_link_requested_at",
            cryptocheckout.kit.types.UTCDateTime(timezone=True),
            nullable=True,
        ),
        sa.Column(
            "created_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "updated_at", cryptocheckout.kit.types.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["orders.id"],
            name=op.f("fk_deliveries_order_id_orders"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_deliveries")),
    )
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_deliveries_created_at"), ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_deliveries_created_at"))
    op.drop_table("deliveries")

    with op.batch_alter_table("licence_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("secret", sa.Text(), nullable=True))

    bind = op.get_bind()
    if bind.execute(sa.select(sa.func.count()).select_from(licence_keys)).scalar_one():
        ring = _key_ring()
        while True:
            rows = bind.execute(
                sa.select(licence_keys.c.id, licence_keys.c.ciphertext)
                .where(licence_keys.c.secret.is_(None))
                .limit(BATCH)
            ).all()
            if not rows:
                break
            for row_id, ciphertext in rows:
                bind.execute(
                    licence_keys.update()
                    .where(licence_keys.c.id == row_id)
                    .values(secret=ring.open(ciphertext, row_id=row_id.bytes))
                )

    with op.batch_alter_table("licence_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_licence_keys_key_id"))
        batch_op.drop_constraint(batch_op.f("uq_licence_keys_product_id_key_hash"), type_="unique")
        batch_op.drop_column("key_hash")
        batch_op.drop_column("key_id")
        batch_op.drop_column("ciphertext")
        batch_op.alter_column("secret", existing_type=sa.Text(), nullable=False)
        batch_op.create_unique_constraint(
            batch_op.f("uq_licence_keys_product_id_secret"), ["product_id", "secret"]
        )

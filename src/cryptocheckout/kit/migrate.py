"""Apply the Alembic migrations from the installed package to a database URL."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str, keys_encryption_key: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Alembic interpolates %-signs in options; a password may contain them.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    # Migrations that encrypt data read the key ring from here (else KEYS_ENCRYPTION_KEY in
    # the environment); an attribute, unlike an option, is never written anywhere.
    if keys_encryption_key:
        config.attributes["keys_encryption_key"] = keys_encryption_key
    return config


def upgrade(
    database_url: str, revision: str = "head", *, keys_encryption_key: str | None = None
) -> None:
    command.upgrade(alembic_config(database_url, keys_encryption_key), revision)


def downgrade(
    database_url: str, revision: str = "base", *, keys_encryption_key: str | None = None
) -> None:
    command.downgrade(alembic_config(database_url, keys_encryption_key), revision)

"""Settings from the environment and `.env`.

Each command asks only for what it uses (see `require`), so `migrate` runs without
NOWPayments secrets and `sandbox` without a database.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./var/cryptocheckout.db"

# Values that ship in .env.example: treated as missing outside demo and test mode.
PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "replace-me", "secret", "sandbox"})

# Secrets that guard a door anyone can knock on must be long enough not to be guessed.
MIN_SECRET_LENGTH = {"admin_token": 32, "metrics_token": 32}


class Mode(StrEnum):
    PRODUCTION = "production"
    DEMO = "demo"
    TEST = "test"


class ConfigurationError(Exception):
    """A setting a command needs is missing or left at a placeholder value."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    mode: Mode = Field(default=Mode.PRODUCTION, validation_alias="CRYPTOCHECKOUT_MODE")
    database_url: str = DEFAULT_DATABASE_URL
    # DATABASE_URL points at a transaction-pooling proxy (PgBouncer, pool_mode = transaction):
    # no prepared statements kept across transactions, no startup parameters or session SETs.
    database_pooled: bool = False
    nowpayments_api_key: SecretStr = SecretStr("")
    nowpayments_ipn_secret: SecretStr = SecretStr("")
    nowpayments_base: str = "https://api-sandbox.nowpayments.io"
    nowpayments_callback_url: str = "http://127.0.0.1:8000/api/webhooks/nowpayments"
    nowpayments_email: str = ""
    nowpayments_password: SecretStr = SecretStr("")
    public_base_url: str = "http://127.0.0.1:8000"
    admin_token: SecretStr = SecretStr("")
    # Bearer token for GET /metrics; empty leaves /metrics open (for a private network).
    metrics_token: SecretStr = SecretStr("")
    # Largest request body the API reads, in bytes; bigger bodies get 413 unread.
    max_body_bytes: int = 64 * 1024
    # A payment short of its pay amount by at most this percentage of it still pays (an
    # exchange's fee taken from what the customer sent), as BTCPay's payment tolerance.
    payment_tolerance_percent: Decimal = Field(default=Decimal(0), ge=0, le=100)
    # Checkout holds an order's keys this long while no payment is open for it; a payment
    # opened holds them until it expires. Either way plus the grace, for payments that
    # arrive late.
    stock_hold_minutes: float = Field(default=30.0, gt=0)
    stock_hold_grace_minutes: float = Field(default=10.0, ge=0)

    def stock_hold_until(self, start: datetime | None = None) -> datetime:
        """When a hold starting at `start` (now) lapses: hold plus grace."""
        return (start or datetime.now(UTC)) + timedelta(
            minutes=self.stock_hold_minutes + self.stock_hold_grace_minutes
        )

    # How long a worker holds a job before another may take it over (a dead worker's job).
    job_lease_seconds: float = 60.0
    # How often an idle worker looks for new notifications and jobs.
    worker_poll_seconds: float = 0.1
    # An open payment with no news for this long is looked up at NOWPayments (a lost IPN).
    reconcile_after_seconds: float = 600.0
    # The customer pages: the shop's name and the address customers write to.
    shop_name: str = "cryptocheckout demo shop"
    support_email: str = "support@example.com"
    # The order page links each payment to the offline sandbox's page for it (the demo).
    sandbox_pay_pages: bool = False
    # A database that does not answer fails a request with 503 within these bounds (seconds):
    # opening a connection, one statement (PostgreSQL), waiting for a pooled connection.
    database_connect_timeout_seconds: float = 3.0
    database_command_timeout_seconds: float = 5.0
    database_pool_timeout_seconds: float = 3.0
    # A client must send a request's headers, then its body, within these (seconds); a slow
    # client is cut off (headers) or answered 408 (body) instead of holding a connection.
    request_header_timeout_seconds: float = 10.0
    request_body_timeout_seconds: float = 15.0
    # Licence keys at rest: comma-separated keys, 32 random bytes in URL-safe base64 each;
    # the first encrypts, every one decrypts (kit/encryption.py).
    keys_encryption_key: SecretStr = SecretStr("")
    # Where mail goes: smtp://[user:password@]host:port (?starttls=true) or smtps://...;
    # without it, each message is written as an .eml file under mail_dir.
    smtp_url: SecretStr = SecretStr("")
    mail_from: str = "cryptocheckout <shop@localhost>"
    mail_dir: Path = Path("var/mail")
    # How long a delivery link shows the keys; afterwards it offers a fresh link by e-mail.
    delivery_link_ttl_seconds: int = Field(default=86400, gt=0)
    # Outbound webhooks may go to loopback, link-local and private addresses (demo, tests).
    webhooks_allow_private: bool = False
    # An endpoint whose deliveries failed without a success for this many days is disabled.
    webhook_disable_after_days: float = Field(default=5.0, gt=0)

    @field_validator("nowpayments_base", "public_base_url")
    @classmethod
    def _strip_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    def require(self, *names: str) -> None:
        """Stop start-up, naming the variable, when a secret a command needs is missing.

        Demo and test mode run with generated secrets, so only production insists.
        """
        if self.mode is not Mode.PRODUCTION:
            return
        missing = []
        short = []
        for name in names:
            value = getattr(self, name)
            text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            if text.strip().lower() in PLACEHOLDER_SECRETS:
                missing.append(name.upper())
            elif len(text.strip()) < MIN_SECRET_LENGTH.get(name, 0):
                short.append(f"{name.upper()} (at least {MIN_SECRET_LENGTH[name]} characters)")
        if missing:
            raise ConfigurationError(
                f"missing or placeholder setting: {', '.join(missing)} "
                "(set it in the environment or in .env; see .env.example)"
            )
        if short:
            raise ConfigurationError(
                f"setting too short: {', '.join(short)}; generate one with "
                "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )

    def engine_options(self) -> dict[str, Any]:
        """The outage bounds and the pooler setting for `kit.db.create_engine`."""
        return {
            "connect_timeout": self.database_connect_timeout_seconds,
            "command_timeout": self.database_command_timeout_seconds,
            "pool_timeout": self.database_pool_timeout_seconds,
            "pooled": self.database_pooled,
        }


@lru_cache
def settings_from_environment() -> Settings:
    """The settings of a command, read once from the environment and `.env`."""
    return Settings()

"""Settings from the environment and `.env`.

Each command asks only for what it uses (see `require`), so `migrate` runs without
NOWPayments secrets and `sandbox` without a database.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///./var/cryptocheckout.db"

# Values that ship in .env.example: treated as missing outside demo and test mode.
PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "replace-me", "secret", "sandbox"})


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
    nowpayments_api_key: SecretStr = SecretStr("")
    nowpayments_ipn_secret: SecretStr = SecretStr("")
    nowpayments_base: str = "https://api-sandbox.nowpayments.io"
    nowpayments_callback_url: str = "http://127.0.0.1:8000/api/webhooks/nowpayments"
    nowpayments_email: str = ""
    nowpayments_password: SecretStr = SecretStr("")
    public_base_url: str = "http://127.0.0.1:8000"
    admin_token: SecretStr = SecretStr("")
    # Largest request body the API reads, in bytes; bigger bodies get 413 unread.
    max_body_bytes: int = 64 * 1024
    # A payment short of its pay amount by at most this percentage of it still pays (an
    # exchange's fee taken from what the customer sent), as BTCPay's payment tolerance.
    payment_tolerance_percent: Decimal = Field(default=Decimal(0), ge=0, le=100)
    # How long a worker holds a job before another may take it over (a dead worker's job).
    job_lease_seconds: float = 60.0
    # How often an idle worker looks for new notifications and jobs.
    worker_poll_seconds: float = 0.1
    # An open payment with no news for this long is looked up at NOWPayments (a lost IPN).
    reconcile_after_seconds: float = 600.0
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
        for name in names:
            value = getattr(self, name)
            text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            if text.strip().lower() in PLACEHOLDER_SECRETS:
                missing.append(name.upper())
        if missing:
            raise ConfigurationError(
                f"missing or placeholder setting: {', '.join(missing)} "
                "(set it in the environment or in .env; see .env.example)"
            )

    @property
    def var_dir(self) -> Path:
        return Path("var")


@lru_cache
def get_settings() -> Settings:
    return Settings()

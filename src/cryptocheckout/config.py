"""Settings from the environment and `.env`.

Each command asks only for what it uses (see `require`), so `migrate` runs without
NOWPayments secrets and `sandbox` without a database.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cryptocheckout.kit.encryption import KeyRing, KeyRingError

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
    # Underpayment tolerance: actually_paid may fall short of pay_amount by this much.
    underpaid_tolerance: str = "0"
    # How long a worker holds a job before another may take it over (a dead worker's job).
    job_lease_seconds: float = 60.0
    # How often an idle worker looks for new notifications and jobs.
    worker_poll_seconds: float = 0.1
    # An open payment with no news for this long is looked up at NOWPayments (a lost IPN).
    reconcile_after_seconds: float = 600.0
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

    def keyring(self) -> KeyRing:
        """The licence-key ring; a missing or malformed key stops start-up, naming the variable."""
        try:
            return KeyRing.parse(self.keys_encryption_key.get_secret_value())
        except KeyRingError as exc:
            raise ConfigurationError(str(exc)) from None

    @property
    def var_dir(self) -> Path:
        return Path("var")


@lru_cache
def get_settings() -> Settings:
    return Settings()

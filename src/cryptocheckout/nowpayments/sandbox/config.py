"""Start-up settings of the offline NOWPayments sandbox."""

from __future__ import annotations

from dataclasses import dataclass

from cryptocheckout.config import get_settings


@dataclass
class SandboxConfig:
    """How one sandbox instance behaves.

    ``resend_attempts`` counts resends after the first delivery, so a notification
    is POSTed at most ``1 + resend_attempts`` times. ``seed`` makes ids, tokens and
    addresses repeat from run to run; ``None`` draws them at random, so a shop's
    database from an earlier run never meets the same payment id twice.
    """

    api_key: str
    ipn_secret: str
    public_url: str
    step_delay: float = 1.0
    resend_attempts: int = 5
    resend_interval: float = 2.0
    email: str = ""
    password: str = ""
    jwt_ttl: float = 300.0
    # The real service gives a receiver 3 seconds before it counts the attempt as failed.
    ipn_timeout: float = 3.0
    # NOWPayments falls back to the account's IPN URL when a payment names none.
    default_ipn_callback_url: str = ""
    seed: int | None = None

    def __post_init__(self) -> None:
        self.public_url = self.public_url.rstrip("/")

    def __repr__(self) -> str:
        # Keep both secrets out of tracebacks and logs that print the config.
        return (
            f"SandboxConfig(public_url={self.public_url!r}, step_delay={self.step_delay!r}, "
            f"resend_attempts={self.resend_attempts!r}, resend_interval={self.resend_interval!r}, "
            f"email={self.email!r}, jwt_ttl={self.jwt_ttl!r}, seed={self.seed!r})"
        )

    @classmethod
    def from_env(cls, public_url: str) -> SandboxConfig:
        """Read the key and IPN secret the shop itself uses, so both sides agree."""
        settings = get_settings()
        settings.require("nowpayments_api_key", "nowpayments_ipn_secret")
        return cls(
            api_key=settings.nowpayments_api_key.get_secret_value(),
            ipn_secret=settings.nowpayments_ipn_secret.get_secret_value(),
            public_url=public_url,
            email=settings.nowpayments_email,
            password=settings.nowpayments_password.get_secret_value(),
        )

"""Start-up settings of the offline NOWPayments sandbox.

The sandbox reads its own few variables instead of the shop's settings: it stands for
NOWPayments, so it must start (and be tested) without anything of the shop it serves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

API_KEY_VARIABLE = "NOWPAYMENTS_API_KEY"
IPN_SECRET_VARIABLE = "NOWPAYMENTS_IPN_SECRET"  # noqa: S105 - a variable name
EMAIL_VARIABLE = "NOWPAYMENTS_EMAIL"
PASSWORD_VARIABLE = "NOWPAYMENTS_PASSWORD"  # noqa: S105 - a variable name
# What .env.example ships with: a sandbox signing with "changeme" would only hide the
# mistake until the shop rejects every notification.
PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "replace-me", "secret", "sandbox"})


class SandboxConfigError(ValueError):
    """A variable the sandbox needs is missing or left at a placeholder value."""


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
    def from_env(
        cls,
        public_url: str,
        environ: Mapping[str, str] | None = None,
        env_file: str | Path | None = ".env",
    ) -> SandboxConfig:
        """Read the key and IPN secret from the variables the shop reads too, so both agree.

        Like the shop, the process environment wins over ``env_file``. A missing or
        placeholder key or secret raises :class:`SandboxConfigError` naming the variables.
        """
        values: dict[str, str] = {}
        if env_file is not None and Path(env_file).is_file():
            values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
        values.update(os.environ if environ is None else environ)
        missing = [
            name
            for name in (API_KEY_VARIABLE, IPN_SECRET_VARIABLE)
            if values.get(name, "").strip().lower() in PLACEHOLDER_SECRETS
        ]
        if missing:
            raise SandboxConfigError(
                f"missing or placeholder setting: {', '.join(missing)} "
                "(set it in the environment or in .env; see .env.example)"
            )
        return cls(
            api_key=values[API_KEY_VARIABLE],
            ipn_secret=values[IPN_SECRET_VARIABLE],
            public_url=public_url,
            email=values.get(EMAIL_VARIABLE, ""),
            password=values.get(PASSWORD_VARIABLE, ""),
        )

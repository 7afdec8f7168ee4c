"""Console sign-in: server-side sessions, CSRF tokens bound to them, and a login throttle.

Why a table and not a signed cookie alone: `Sign out` must end a session for good (a copied
cookie of a signed-out session is worthless), expiry is decided by the server, and every
session has a short label that the audit trail names as who acted. The cookie holds a random
secret; the table holds only its SHA-256. Each session also stores an HMAC of the ADMIN_TOKEN
that signed it in: after the token changes, no earlier session is accepted.

The CSRF token of a form is an HMAC of a fixed label under the session's own secret: only a
page served to that session can carry it, and it dies with the session.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.admin import repository
from cryptocheckout.admin.models import AdminSession
from cryptocheckout.config import Settings
from cryptocheckout.kit.clock import utcnow

SESSION_COOKIE = "cc_admin"
SESSION_TTL = timedelta(hours=8)
CSRF_FIELD = "csrf_token"


def token_id(settings: Settings) -> str:
    """Names the current ADMIN_TOKEN without revealing it."""
    token = settings.admin_token.get_secret_value().encode()
    return hmac.new(token, b"cryptocheckout admin session v1", hashlib.sha256).hexdigest()


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Staff:
    """The signed-in person of one request."""

    session_id: str
    label: str
    csrf_token: str
    expires_at: datetime

    def csrf_valid(self, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(
            (given or "").encode("utf-8", "surrogatepass"), self.csrf_token.encode()
        )


def _csrf(secret: str) -> str:
    return hmac.new(secret.encode(), b"cryptocheckout admin csrf v1", hashlib.sha256).hexdigest()


async def sign_in(session: AsyncSession, settings: Settings) -> tuple[str, AdminSession]:
    """A new session; returns the cookie's secret (shown to nobody else) and the row."""
    now = utcnow()
    await repository.prune_sessions(session, now - timedelta(days=1))
    secret = secrets.token_urlsafe(32)
    row = AdminSession(
        secret_hash=_hash(secret),
        token_id=token_id(settings),
        label="",
        expires_at=now + SESSION_TTL,
    )
    session.add(row)
    await session.flush()
    row.label = f"session {row.id.hex[:8]}"
    return secret, row


async def signed_in(session: AsyncSession, settings: Settings, secret: str | None) -> Staff | None:
    """The staff behind a session cookie, or None (unknown, ended, expired or an old token)."""
    if not secret or len(secret) > 100:
        return None
    row = await repository.session_by_secret_hash(session, _hash(secret))
    if row is None or row.ended_at is not None or row.expires_at <= utcnow():
        return None
    if not hmac.compare_digest(row.token_id, token_id(settings)):
        return None
    return Staff(str(row.id), row.label, _csrf(secret), row.expires_at)


async def sign_out(session: AsyncSession, secret: str | None) -> None:
    if not secret:
        return
    row = await repository.session_by_secret_hash(session, _hash(secret))
    if row is not None and row.ended_at is None:
        row.ended_at = utcnow()


class LoginThrottle:
    """Refuses sign-in from an address after `limit` failures within `window` seconds.

    In memory, per process: enough to make guessing a 32-character token hopeless; a shop with
    several processes multiplies the budget by their number, which changes nothing about that.
    """

    def __init__(self, limit: int = 5, window: float = 15 * 60, max_addresses: int = 10_000):
        self.limit = limit
        self.window = window
        self.max_addresses = max_addresses
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float]:
        failures = self._failures.get(address, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def retry_after(self, address: str) -> int | None:
        """Seconds until this address may try again, or None if it may now."""
        now = time.monotonic()
        failures = self._recent(address, now)
        if len(failures) < self.limit:
            return None
        return max(1, int(failures[0] + self.window - now) + 1)

    def failed(self, address: str) -> None:
        now = time.monotonic()
        if address not in self._failures and len(self._failures) >= self.max_addresses:
            self._forget_stale(now)
        failures = self._recent(address, now)
        failures.append(now)
        self._failures[address] = failures

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)

    def _forget_stale(self, now: float) -> None:
        for address in list(self._failures):
            if not self._recent(address, now):
                del self._failures[address]
        while len(self._failures) >= self.max_addresses:  # a flood of addresses: oldest go
            self._failures.pop(next(iter(self._failures)))

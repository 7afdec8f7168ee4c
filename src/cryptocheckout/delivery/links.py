"""Signed, expiring delivery links: `{PUBLIC_BASE_URL}/delivery/{token}`.

The token names the order and the moment the link stops working, signed with HMAC-SHA256 by
`itsdangerous` (a small, well-kept library that does exactly this: compact URL-safe tokens,
constant-time checks, several keys so the signing key can rotate). The signing keys are
derived from `KEYS_ENCRYPTION_KEY` (kit/encryption.py), so there is no other secret to keep,
and rotating that setting rotates the links' key too: links signed by any key still in the
ring keep working until they expire.

The expiry is inside the token rather than checked against its signing time, so changing
`DELIVERY_LINK_TTL_SECONDS` never extends or cuts short links already sent, and a token whose
signature is good but whose time is up still tells which order it was for (to offer a fresh
link by e-mail).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from itsdangerous import BadSignature, URLSafeSerializer

from cryptocheckout.kit.encryption import KeyRing

SALT = "cryptocheckout.delivery-link"


class LinkInvalid(Exception):
    """Not a token we signed (altered, truncated, made up, or signed by a retired key)."""


@dataclass(frozen=True)
class DeliveryToken:
    order_id: uuid.UUID
    expires_at: datetime

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at


class DeliveryLinks:
    def __init__(self, ring: KeyRing, public_base_url: str, ttl: timedelta) -> None:
        self._serializer = URLSafeSerializer(ring.signing_keys(), salt=SALT)
        self.public_base_url = public_base_url.rstrip("/")
        self.ttl = ttl

    def token(self, order_id: uuid.UUID, now: datetime) -> str:
        expires = int((now + self.ttl).timestamp())
        return str(self._serializer.dumps([order_id.hex, expires]))

    def url(self, order_id: uuid.UUID, now: datetime) -> str:
        return f"{self.public_base_url}/delivery/{self.token(order_id, now)}"

    def read(self, token: str) -> DeliveryToken:
        """The order and expiry a token names; `LinkInvalid` unless we signed it."""
        try:
            payload = self._serializer.loads(token)
            order_hex, expires = payload
            return DeliveryToken(
                order_id=uuid.UUID(hex=order_hex),
                expires_at=datetime.fromtimestamp(int(expires), UTC),
            )
        except (BadSignature, TypeError, ValueError, OverflowError):
            raise LinkInvalid("not a delivery link of this shop") from None

    def order_page_url(self, order_id: uuid.UUID) -> str:
        return f"{self.public_base_url}/orders/{order_id}"

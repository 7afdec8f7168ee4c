"""CSRF tokens, the order-access cookie and the headers every page carries.

CSRF: a signed double submit that works on a first visit without cookies. Any page with a
form sets a random nonce in an HttpOnly cookie (`cc_csrf`, SameSite=Lax) when the browser has
none, and puts `<time>.<HMAC(key, nonce.time)>` in the form. A POST is accepted only when the
field's HMAC matches the cookie's nonce and is younger than `CSRF_MAX_AGE`. Another site can
make a browser post the form, but it can neither read the field nor set our cookie, and a
forged cookie without our key yields no valid field; nothing is stored on the server. The key
is derived from ADMIN_TOKEN (a secret every serving process has), so any process of a shop
accepts a token another one issued.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from urllib.parse import urlsplit

from fastapi import Request, Response

from cryptocheckout.config import Settings

CSRF_COOKIE = "cc_csrf"
CSRF_FIELD = "csrf_token"
CSRF_MAX_AGE = 12 * 3600
ORDER_COOKIE_MAX_AGE = 30 * 24 * 3600

_PROCESS_KEY = secrets.token_bytes(32)


def _csrf_key(settings: Settings) -> bytes:
    admin = settings.admin_token.get_secret_value()
    if not admin:  # tests and tools without an admin token: valid within this process only
        return _PROCESS_KEY
    return hmac.new(admin.encode(), b"cryptocheckout pages csrf v1", hashlib.sha256).digest()


def _sign(settings: Settings, nonce: str, issued: int) -> str:
    message = f"{nonce}.{issued}".encode()
    return hmac.new(_csrf_key(settings), message, hashlib.sha256).hexdigest()


def secure_cookies(settings: Settings) -> bool:
    return settings.public_base_url.startswith("https://")


class Csrf:
    """The CSRF nonce of one request: read from the cookie, or new (then set on the response)."""

    def __init__(self, request: Request, settings: Settings) -> None:
        self.settings = settings
        cookie = request.cookies.get(CSRF_COOKIE, "")
        self.is_new = not (16 <= len(cookie) <= 64 and cookie.isascii())
        self.nonce = secrets.token_urlsafe(24) if self.is_new else cookie

    def token(self) -> str:
        issued = int(time.time())
        return f"{issued}.{_sign(self.settings, self.nonce, issued)}"

    def valid(self, field: str | None) -> bool:
        if self.is_new or not field:
            return False
        issued_text, _, mac = field.partition(".")
        if not issued_text.isdigit():
            return False
        issued = int(issued_text)
        if not 0 <= time.time() - issued <= CSRF_MAX_AGE:
            return False
        return hmac.compare_digest(mac, _sign(self.settings, self.nonce, issued))

    def set_cookie(self, response: Response) -> None:
        if self.is_new:
            response.set_cookie(
                CSRF_COOKIE,
                self.nonce,
                httponly=True,
                samesite="lax",
                secure=secure_cookies(self.settings),
                path="/",
            )


def order_cookie_name(order_id: object) -> str:
    return f"cc_order_{order_id}"


def set_order_cookie(response: Response, settings: Settings, order_id: object, token: str) -> None:
    """The order's access token, for this order's pages only (its path) and never for scripts."""
    response.set_cookie(
        order_cookie_name(order_id),
        token,
        max_age=ORDER_COOKIE_MAX_AGE,
        httponly=True,
        samesite="lax",
        secure=secure_cookies(settings),
        path=f"/orders/{order_id}",
    )


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(settings: Settings) -> str:
    # Forms post to us; the invoice button is then redirected to NOWPayments' page, and
    # browsers apply form-action to that redirect too.
    targets = {"'self'", "https://nowpayments.io", "https://sandbox.nowpayments.io"}
    sandbox = _origin(settings.nowpayments_base)
    if sandbox is not None:
        targets.add(sandbox)
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "connect-src 'self'",
            f"form-action {' '.join(sorted(targets))}",
            "frame-ancestors 'none'",
            "base-uri 'none'",
        )
    )


def page_headers(response: Response, settings: Settings, *, private: bool) -> Response:
    """Headers of every page; `private` pages (an order, its token) are never stored."""
    response.headers["Content-Security-Policy"] = content_security_policy(settings)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    # Links out of a page must not tell the next site which order (or token) it came from.
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store" if private else "no-cache"
    return response

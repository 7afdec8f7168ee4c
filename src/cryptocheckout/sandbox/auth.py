"""Credentials: the API key on merchant calls and the short-lived JWT from ``POST /v1/auth``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

from starlette.requests import Request

from cryptocheckout.sandbox.wire import ApiError, ErrorCode

API_KEY_HEADER = "x-api-key"
_JWT_HEADER = {"alg": "HS256", "typ": "JWT"}


def key_state(request_key: str | None, api_key: str) -> str:
    """``valid``, ``invalid`` or ``missing``: what the request log keeps instead of the key."""
    if not request_key:
        return "missing"
    if api_key and hmac.compare_digest(request_key.encode(), api_key.encode()):
        return "valid"
    return "invalid"


def require_api_key(request: Request, api_key: str) -> None:
    if key_state(request.headers.get(API_KEY_HEADER), api_key) != "valid":
        raise ApiError(403, ErrorCode.INVALID_API_KEY, "Invalid api key")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class JwtIssuer:
    """HS256 tokens signed with a key that lives as long as the process, like a session."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def issue(self, subject: str, ttl: float) -> str:
        now = time.time()
        claims = {"id": subject, "iat": int(now), "exp": now + ttl}
        head = _b64(json.dumps(_JWT_HEADER, separators=(",", ":")).encode())
        body = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{_b64(signature)}"

    def check(self, token: str) -> bool:
        parts = token.split(".")
        if len(parts) != 3:
            return False
        head, body, signature = parts
        expected = hmac.new(self._key, f"{head}.{body}".encode(), hashlib.sha256).digest()
        try:
            if not hmac.compare_digest(_unb64(signature), expected):
                return False
            claims = json.loads(_unb64(body))
        except ValueError:
            return False
        expires = claims.get("exp") if isinstance(claims, dict) else None
        return isinstance(expires, int | float) and time.time() < expires

    def require(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise ApiError(
                401,
                ErrorCode.AUTH_REQUIRED,
                "Authorization header is empty (Bearer JWTtoken is required)",
            )
        if scheme.lower() != "bearer" or not self.check(token.strip()):
            raise ApiError(401, ErrorCode.AUTH_REQUIRED, "Invalid or expired token")

"""Bearer tokens and capability tokens, compared in constant time."""

from __future__ import annotations

import hmac
import secrets

from fastapi import Request

from cryptocheckout.kit.problems import Problem
from cryptocheckout.kit.ratelimit import FailureLimiter, address_key


def tokens_match(given: str | None, expected: str) -> bool:
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


def new_access_token() -> str:
    return secrets.token_urlsafe(32)


def client_address(request: Request) -> str:
    """The client's address as the limiter counts it (uvicorn takes it from X-Forwarded-For
    when the proxy is trusted)."""
    return address_key(request.client.host) if request.client else "unknown"


def admin_limiter(request: Request) -> FailureLimiter:
    """The app's limiter of failed admin sign-ins (one per app, so per process)."""
    state = request.app.state
    limiter: FailureLimiter | None = getattr(state, "admin_failures", None)
    if limiter is None:
        limiter = state.admin_failures = FailureLimiter()
    return limiter


def require_admin(request: Request) -> None:
    """FastAPI dependency: `Authorization: Bearer <ADMIN_TOKEN>`, anything else is 401.

    An address that keeps failing is refused with 429 before its token is even compared.
    """
    limiter = admin_limiter(request)
    address = client_address(request)
    wait = limiter.retry_after(address)
    if wait:
        raise Problem(
            429,
            "Too many failed admin sign-ins from this address; try again later.",
            type_="too-many-attempts",
            headers={"Retry-After": str(wait)},
        )
    expected: str = request.app.state.settings.admin_token.get_secret_value()
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not tokens_match(token.strip(), expected):
        limiter.failed(address)
        raise Problem(
            401,
            "A valid admin bearer token is required.",
            type_="unauthorized",
            headers={"WWW-Authenticate": "Bearer"},
        )

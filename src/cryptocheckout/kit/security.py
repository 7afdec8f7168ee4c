"""Bearer tokens and capability tokens, compared in constant time."""

from __future__ import annotations

import hmac
import secrets

from fastapi import Request

from cryptocheckout.kit.problems import Problem


def tokens_match(given: str | None, expected: str) -> bool:
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8"))


def new_access_token() -> str:
    return secrets.token_urlsafe(32)


def require_admin(request: Request) -> None:
    """FastAPI dependency: `Authorization: Bearer <ADMIN_TOKEN>`, anything else is 401."""
    expected: str = request.app.state.settings.admin_token.get_secret_value()
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not tokens_match(token.strip(), expected):
        raise Problem(
            401,
            "A valid admin bearer token is required.",
            type_="unauthorized",
            headers={"WWW-Authenticate": "Bearer"},
        )

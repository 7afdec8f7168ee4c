"""Typed exceptions of the NOWPayments client.

Every error raised by :mod:`cryptocheckout.nowpayments.client` derives from
:class:`NowPaymentsError`:

* :class:`NowPaymentsApiError` - NOWPayments (or the CDN in front of it) answered
  with an error status. Built from the documented error body
  ``{"status": false, "statusCode": 400, "code": "AMOUNT_MINIMAL_ERROR", "message": "..."}``;
  bodies that are not JSON (an HTML page from the CDN) get a synthetic code
  ``HTTP_<status>``. Well-known codes have their own subclasses
  (:class:`InvalidApiKeyError`, :class:`AuthRequiredError`, :class:`AmountMinimalError`,
  :class:`NotFoundError`, :class:`InvalidRequestParamsError`).
* :class:`NowPaymentsUnavailable` - no answer at all (connection refused or reset,
  timeout) after the allowed retries.
* :class:`NowPaymentsPayloadError` - an answer or an IPN body that cannot be read
  as what the API documents.
* :class:`MissingCredentialsError` - a call needs the account e-mail and password
  (JWT) and the client was built without them.

``outcome_unknown`` is set when a create call (invoice, payment, invoice payment)
failed in a way where NOWPayments may nevertheless have created the object: the
caller must reconcile (look it up by ``order_id``) instead of blindly creating it
again.

Messages never contain the API key, the password or a JWT: the client passes
those secrets as ``redact`` and they are replaced before the exception exists.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

__all__ = [
    "AmountMinimalError",
    "AuthRequiredError",
    "InvalidApiKeyError",
    "InvalidRequestParamsError",
    "MissingCredentialsError",
    "NotFoundError",
    "NowPaymentsApiError",
    "NowPaymentsError",
    "NowPaymentsPayloadError",
    "NowPaymentsUnavailable",
    "api_error_from_response",
    "redact",
]

REDACTED = "[redacted]"
# Error texts from a CDN can be whole HTML pages; a log line needs only the start.
_MAX_MESSAGE = 300
_WHITESPACE = re.compile(r"\s+")


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of each (non-empty) secret in `text`."""
    # Longest first, so a secret that contains another one is removed whole.
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


class NowPaymentsError(Exception):
    """Base class of everything the NOWPayments client raises."""

    outcome_unknown: bool = False

    def __init__(self, message: str, *, outcome_unknown: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.outcome_unknown = outcome_unknown

    def __str__(self) -> str:
        return self.message


class MissingCredentialsError(NowPaymentsError):
    """The call needs a JWT, and the client has no e-mail and password to get one."""


class NowPaymentsPayloadError(NowPaymentsError, ValueError):
    """A NOWPayments answer or IPN body is not what the API documents."""


class NowPaymentsUnavailable(NowPaymentsError):
    """NOWPayments could not be reached, or did not answer in time, after retries."""

    def __init__(
        self,
        message: str,
        *,
        method: str,
        path: str,
        attempts: int,
        outcome_unknown: bool = False,
    ) -> None:
        super().__init__(message, outcome_unknown=outcome_unknown)
        self.method = method
        self.path = path
        self.attempts = attempts


class NowPaymentsApiError(NowPaymentsError):
    """NOWPayments answered with an error status and (usually) an error body."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        request_id: str | None = None,
        *,
        method: str = "",
        path: str = "",
        retry_after: float | None = None,
        outcome_unknown: bool = False,
    ) -> None:
        where = f" to {method} {path}" if method else ""
        rid = f" (request id {request_id})" if request_id else ""
        super().__init__(
            f"NOWPayments answered {status_code} {code}{where}: {message}{rid}",
            outcome_unknown=outcome_unknown,
        )
        self.status_code = status_code
        self.code = code
        self.message = message
        self.request_id = request_id
        self.method = method
        self.path = path
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" to {self.method} {self.path}" if self.method else ""
        rid = f" (request id {self.request_id})" if self.request_id else ""
        return f"NOWPayments answered {self.status_code} {self.code}{where}: {self.message}{rid}"

    @property
    def retryable(self) -> bool:
        """A rate limit or a server-side failure: the same request may succeed later."""
        return self.status_code == 429 or self.status_code >= 500


class InvalidApiKeyError(NowPaymentsApiError):
    """403 ``INVALID_API_KEY``: the key is wrong, or belongs to the other environment."""


class AuthRequiredError(NowPaymentsApiError):
    """401 ``AUTH_REQUIRED``: the call needs ``Authorization: Bearer <JWT>``."""


class AmountMinimalError(NowPaymentsApiError):
    """400 ``AMOUNT_MINIMAL_ERROR``: below the coin's minimum (see ``/v1/min-amount``)."""


class NotFoundError(NowPaymentsApiError):
    """404 ``NOT_FOUND``: no such payment or invoice on this account."""


class InvalidRequestParamsError(NowPaymentsApiError):
    """400 ``INVALID_REQUEST_PARAMS``: a parameter was missing or malformed."""


_BY_CODE: dict[str, type[NowPaymentsApiError]] = {
    "INVALID_API_KEY": InvalidApiKeyError,
    "AUTH_REQUIRED": AuthRequiredError,
    "AMOUNT_MINIMAL_ERROR": AmountMinimalError,
    "NOT_FOUND": NotFoundError,
    "INVALID_REQUEST_PARAMS": InvalidRequestParamsError,
}


def _short(text: str) -> str:
    text = _WHITESPACE.sub(" ", text).strip()
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def api_error_from_response(
    status_code: int,
    body: bytes,
    *,
    reason: str = "",
    request_id: str | None = None,
    method: str = "",
    path: str = "",
    retry_after: float | None = None,
    outcome_unknown: bool = False,
    secrets: Iterable[str] = (),
) -> NowPaymentsApiError:
    """Build the typed exception for an error answer.

    Reads the documented JSON error body; anything else (an HTML page from the
    CDN, an empty body) becomes code ``HTTP_<status>`` with the start of the text.
    """
    code = f"HTTP_{status_code}"
    message = reason or "error"
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
        text = body.decode("utf-8", "replace")
        if text.strip():
            message = text
    if isinstance(data, dict):
        raw_code = data.get("code")
        if isinstance(raw_code, str) and raw_code.strip():
            code = raw_code.strip()
        raw_message = data.get("message")
        if raw_message is not None and str(raw_message).strip():
            message = str(raw_message)
        elif data:
            message = json.dumps(data, ensure_ascii=False)
    secrets = tuple(secrets)
    cls = _BY_CODE.get(code, NowPaymentsApiError)
    return cls(
        status_code,
        redact(code, secrets),
        _short(redact(message, secrets)),
        request_id,
        method=method,
        path=redact(path, secrets),
        retry_after=retry_after,
        outcome_unknown=outcome_unknown,
    )

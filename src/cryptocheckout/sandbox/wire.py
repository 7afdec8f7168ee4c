"""What goes over the wire: JSON written the way NOWPayments' JavaScript writes it, its error
bodies, and strict reading of JSON request bodies into exact values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, NoReturn
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

from cryptocheckout.nowpayments.signature import js_number

# Amounts above this would print as exponent numbers or infinity in JavaScript; no
# checkout needs them, so they are refused as invalid rather than answered oddly.
MAX_AMOUNT = Decimal("1e12")
MAX_TEXT = 4096

JsonValue = None | bool | int | float | str | list[Any] | dict[str, Any]


class ErrorCode(StrEnum):
    INVALID_API_KEY = "INVALID_API_KEY"
    AUTH_REQUIRED = "AUTH_REQUIRED"
    INVALID_REQUEST_PARAMS = "INVALID_REQUEST_PARAMS"
    AMOUNT_MINIMAL_ERROR = "AMOUNT_MINIMAL_ERROR"
    NOT_FOUND = "NOT_FOUND"
    TOO_MANY_REQUESTS = "TOO_MANY_REQUESTS"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"


class ApiError(Exception):
    """An error answered with NOWPayments' body shape."""

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    def body(self) -> dict[str, JsonValue]:
        return {
            "status": False,
            "statusCode": self.status_code,
            "code": self.code,
            "message": self.message,
        }


def invalid(message: str) -> ApiError:
    return ApiError(400, ErrorCode.INVALID_REQUEST_PARAMS, message)


def _write(value: object, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, int | float):
        out.append(js_number(value))
    elif isinstance(value, dict):
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if i:
                out.append(",")
            out.append(json.dumps(str(key), ensure_ascii=False))
            out.append(":")
            _write(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise TypeError(f"not a JSON value: {type(value).__name__}")


def js_json(value: object) -> bytes:
    """Compact JSON with numbers printed by JavaScript's rules, keys in insertion order."""
    out: list[str] = []
    _write(value, out)
    return "".join(out).encode("utf-8")


class JsResponse(Response):
    media_type = "application/json; charset=utf-8"

    def render(self, content: Any) -> bytes:
        return js_json(content)


def error_response(error: ApiError) -> JsResponse:
    return JsResponse(error.body(), status_code=error.status_code, headers=error.headers)


def num(amount: Decimal) -> int | float:
    """An amount as the double JavaScript would hold: integral amounts stay ints."""
    if amount == amount.to_integral_value() and abs(amount) < 2**53:
        return int(amount)
    return float(amount)


def plain(amount: Decimal) -> str:
    """An amount as text, no exponent and no trailing zeros, as ``String(number)`` mostly gives."""
    return format(amount.normalize(), "f")


def iso(moment: datetime) -> str:
    """``Date.prototype.toISOString``: UTC with milliseconds and a Z."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def epoch_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object. An empty body reads as ``{}``, so required fields are
    reported by name; a body of another type (a form) is refused outright, where the real
    API's JSON parser would ignore it and then miss the fields.
    """
    raw = await request.body()
    if not raw.strip():
        return {}
    if not _is_json_type(request.headers.get("content-type", "")):
        raise invalid("Request body must be JSON (Content-Type: application/json)")
    try:
        data = json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise invalid(f"Unexpected token in JSON body: {exc}") from None
    if not isinstance(data, dict):
        raise invalid('"value" must be of type object')
    return data


def req_text(data: Mapping[str, Any], name: str) -> str:
    value = opt_text(data, name)
    if value is None:
        raise invalid(f'"{name}" is required')
    return value


def opt_text(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(f'"{name}" must be a string')
    if len(value) > MAX_TEXT:
        raise invalid(f'"{name}" length must be less than or equal to {MAX_TEXT} characters long')
    if value == "":
        raise invalid(f'"{name}" is not allowed to be empty')
    return value


def opt_id_text(data: Mapping[str, Any], name: str) -> str | None:
    """Text that callers also send as a number (order ids, purchase ids)."""
    value = data.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return str(int(value))
    return opt_text(data, name)


def to_decimal(value: object, name: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise invalid(f'"{name}" must be a number')
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, Decimal):
        number = value
    elif isinstance(value, str) and value.strip():
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise invalid(f'"{name}" must be a number') from None
    else:
        raise invalid(f'"{name}" must be a number')
    if not number.is_finite():
        raise invalid(f'"{name}" must be a number')
    return number


def amount(value: object, name: str) -> Decimal:
    number = to_decimal(value, name)
    if number <= 0:
        raise invalid(f'"{name}" must be a positive number')
    if number > MAX_AMOUNT:
        raise invalid(f'"{name}" must be less than or equal to {plain(MAX_AMOUNT)}')
    return number


def req_amount(data: Mapping[str, Any], name: str) -> Decimal:
    if data.get(name) is None:
        raise invalid(f'"{name}" is required')
    return amount(data[name], name)


def opt_amount(data: Mapping[str, Any], name: str) -> Decimal | None:
    if data.get(name) is None:
        return None
    return amount(data[name], name)


def opt_bool(data: Mapping[str, Any], name: str) -> bool | None:
    value = data.get(name)
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise invalid(f'"{name}" must be a boolean')


def opt_url(data: Mapping[str, Any], name: str) -> str | None:
    value = opt_text(data, name)
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise invalid(f'"{name}" must be a valid uri')
    return value


def is_http_url(value: str | None) -> bool:
    if not value:
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)

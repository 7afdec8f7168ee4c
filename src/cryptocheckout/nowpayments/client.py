"""Async client for the NOWPayments REST API (``/v1``), for a checkout.

One :class:`NowPaymentsClient` holds one ``httpx.AsyncClient`` (one connection
pool); share it across requests and close it with ``aclose()`` or ``async with``::

    async with NowPaymentsClient(settings.nowpayments_base, api_key) as np:
        payment = await np.create_payment(Decimal("12.50"), "usd", "btc", order_id=order.id)

What the client takes care of, following NOWPayments' documentation and the
quirks real integrations meet:

* JSON request bodies, with :class:`~decimal.Decimal` amounts written as JSON
  numbers in plain notation from the Decimal's own digits (never via float);
  floats are refused as amounts.
* Answers decoded with ``parse_float=Decimal`` into the models of
  :mod:`cryptocheckout.nowpayments.models`, whatever mix of string/number types
  NOWPayments uses for ids and amounts.
* Typed errors (:mod:`cryptocheckout.nowpayments.errors`).
* Explicit timeouts and retries with exponential backoff and full jitter,
  honouring ``Retry-After``; creates are never retried blindly (see ``_send``).
* The JWT that ``GET /v1/payment/`` needs, fetched from ``POST /v1/auth``, cached
  and renewed before its five minutes run out.
* One log line per HTTP attempt on the ``cryptocheckout.nowpayments`` logger
  with method, path, status, elapsed time and ``x-request-id``; never the API
  key, the password or a JWT.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, overload
from urllib.parse import quote

import httpx

from cryptocheckout import __version__
from cryptocheckout.nowpayments.errors import (
    MissingCredentialsError,
    NowPaymentsApiError,
    NowPaymentsPayloadError,
    NowPaymentsUnavailable,
    api_error_from_response,
    redact,
)
from cryptocheckout.nowpayments.models import (
    CreatedPayment,
    Estimate,
    FixedRateCurrency,
    Invoice,
    MinAmount,
    NowPaymentsModel,
    PaymentInfo,
    PaymentList,
    format_amount,
    loads_exact,
    parse_amount,
    parse_id,
)

__all__ = ["DEFAULT_TIMEOUT", "AmountInput", "NowPaymentsClient", "encode_json"]

logger = logging.getLogger("cryptocheckout.nowpayments")

DEFAULT_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
"""Connect 5 s; read, write and waiting for a pooled connection 15 s each."""

AmountInput = Decimal | int | str
"""An amount argument: a Decimal, an integer, or decimal text. Never a float."""

# NOWPayments documents a JWT lifetime of 5 minutes; renew a minute early (a fifth
# of a shorter lifetime) so a token never expires between our check and the
# request reaching the server.
JWT_LIFETIME = 300.0
JWT_RENEW_MARGIN = 60.0
# Integers above 2**53 lose digits in JavaScript, which NOWPayments runs on.
_JS_SAFE_INTEGER = 2**53
_LIST_LIMIT_MAX = 500

_ModelT = TypeVar("_ModelT", bound=NowPaymentsModel)

# Transport errors that happen before any byte of the request left this host:
# no TCP connection (refused, DNS, TLS handshake), or no free pooled connection.
# Only these are safe to repeat for a create.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Misconfiguration (bad URL scheme...), not an outage: retrying cannot help.
_FATAL = (httpx.UnsupportedProtocol, httpx.LocalProtocolError)


def encode_json(value: object) -> bytes:
    """Serialise a request body; :class:`Decimal` becomes a plain-notation JSON number.

    ``json.dumps`` cannot write a Decimal as a number without a float round-trip,
    so the (small, flat) request bodies are written here. Floats are refused so
    money never passes through binary floating point.
    """
    out: list[str] = []
    _write_json(value, out)
    return "".join(out).encode("utf-8")


def _write_json(value: object, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, Decimal):
        out.append(format_amount(value))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        raise TypeError("floats are not sent to NOWPayments: use Decimal for amounts")
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, Mapping):
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be str, not {type(key).__name__}")
            if index:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _write_json(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write_json(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot send {type(value).__name__} as JSON")


def _amount_arg(name: str, value: AmountInput) -> Decimal:
    if isinstance(value, float):
        raise TypeError(f"{name}: floats lose digits; pass a Decimal or decimal text")
    try:
        amount = parse_amount(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if amount is None:
        raise ValueError(f"{name} is required")
    return amount


def _id_arg(name: str, value: str | int) -> str:
    try:
        text = parse_id(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    if text is None:
        raise ValueError(f"{name} is required")
    return text


def _json_id(value: str) -> int | str:
    """An id for a request body: a number, as NOWPayments' documented examples send it.

    Ids too large for a JavaScript number stay strings, so no digit is lost.
    """
    if value.isascii() and value.isdigit() and int(value) < _JS_SAFE_INTEGER:
        return int(value)
    return value


def _bool_param(value: bool) -> str:
    return "true" if value else "false"


def _date_param(value: date | datetime | str) -> str:
    """``dateFrom``/``dateTo``: a day as ``YYYY-MM-DD``, a moment as UTC ISO text."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("datetime filters must be timezone-aware")
        text = value.astimezone(UTC).isoformat(timespec="milliseconds")
        return text.replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _compact(fields: Mapping[str, object]) -> dict[str, object]:
    """Drop unset (None) fields: NOWPayments validates a null differently from a missing key."""
    return {key: value for key, value in fields.items() if value is not None}


def _jwt_lifetime(token: str) -> float:
    """Seconds the token is valid for: ``exp - iat`` from its claims, at most 5 minutes.

    The difference of two claims set by the server is immune to clock skew
    between it and us; a token that cannot be read is given the documented 5 minutes.
    """
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        lifetime = float(claims["exp"]) - float(claims["iat"])
    except (IndexError, KeyError, TypeError, ValueError, binascii.Error):
        return JWT_LIFETIME
    return min(lifetime, JWT_LIFETIME) if lifetime > 0 else JWT_LIFETIME


def _currency_tickers(data: object) -> list[object]:
    # /v1/currencies answers {"currencies": [...]}; /v1/merchant/coins is documented
    # as {"selectedCurrencies": [...]} by NOWPayments and as "currencies" elsewhere;
    # a bare list is accepted as well.
    if isinstance(data, Mapping):
        for key in ("currencies", "selectedCurrencies"):
            items = data.get(key)
            if isinstance(items, list):
                return items
    if isinstance(data, list):
        return data
    raise NowPaymentsPayloadError("expected a list of currencies")


def _ticker(item: object) -> str:
    if isinstance(item, str) and item.strip():
        return item.strip().lower()
    raise NowPaymentsPayloadError(f"not a currency ticker: {item!r}")


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    params: Mapping[str, str] | None = None
    body: bytes | None = None
    api_key: bool = True
    # A create is not idempotent: NOWPayments has no idempotency key, so a repeat
    # that reaches the server makes a second invoice or payment.
    create: bool = False


class NowPaymentsClient:
    """Async client for one NOWPayments account.

    ``base_url`` is the host part (``https://api.nowpayments.io``,
    ``https://api-sandbox.nowpayments.io`` or the offline sandbox); ``/v1/...`` is
    appended. ``email`` and ``password`` are only needed for :meth:`list_payments`
    (and for the JWT fallback of :meth:`get_payment`).

    ``max_retries`` is the number of repeats after the first attempt of a call
    that may be repeated. Delays grow from ``backoff_base`` seconds, doubled per
    attempt, capped at ``max_backoff``, with full jitter; a ``Retry-After`` header
    replaces that delay, capped at ``max_retry_after``.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        email: str = "",
        password: str = "",
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        max_retries: int = 3,
        backoff_base: float = 0.25,
        max_backoff: float = 8.0,
        max_retry_after: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        base = base_url.strip().rstrip("/")
        base = base.removesuffix("/v1")
        self.base_url = base
        self._api_key = api_key.strip()
        self._email = email.strip()
        self._password = password
        self._max_retries = max_retries
        self._backoff_base = backoff_base
        self._max_backoff = max_backoff
        self._max_retry_after = max_retry_after
        self._http = httpx.AsyncClient(
            base_url=base,
            timeout=timeout,
            transport=transport,
            headers={
                "Accept": "application/json",
                "User-Agent": f"cryptocheckout/{__version__}",
            },
            follow_redirects=False,
        )
        self._jwt: str | None = None
        self._jwt_renew_at = 0.0
        self._jwt_lock = asyncio.Lock()
        self._old_jwts: list[str] = []
        # Set once GET /v1/payment/{id} answered 401: later calls send the JWT directly.
        self._status_needs_jwt = False

    def __repr__(self) -> str:
        return f"NowPaymentsClient(base_url={self.base_url!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool. The client cannot be used afterwards."""
        await self._http.aclose()

    @property
    def has_credentials(self) -> bool:
        """Whether e-mail and password are configured, so JWT calls can work."""
        return bool(self._email and self._password)

    # ---------------------------------------------------------------- public calls

    async def status(self) -> str:
        """``GET /v1/status``: the API's own health message, ``"OK"`` when up."""
        data = await self._send(_Call("GET", "/v1/status", api_key=False))
        if isinstance(data, Mapping) and isinstance(data.get("message"), str):
            return str(data["message"])
        raise NowPaymentsPayloadError("GET /v1/status: no message in the answer")

    @overload
    async def currencies(self, fixed_rate: Literal[False] = False) -> list[str]: ...
    @overload
    async def currencies(self, fixed_rate: Literal[True]) -> list[FixedRateCurrency]: ...
    @overload
    async def currencies(self, fixed_rate: bool) -> list[str] | list[FixedRateCurrency]: ...

    async def currencies(self, fixed_rate: bool = False) -> list[str] | list[FixedRateCurrency]:
        """``GET /v1/currencies``: tickers (lower case), or with ``fixed_rate`` their limits."""
        params = {"fixed_rate": "true"} if fixed_rate else None
        data = await self._send(_Call("GET", "/v1/currencies", params=params))
        items = _currency_tickers(data)
        if not fixed_rate:
            return [
                _ticker(item.get("currency") if isinstance(item, Mapping) else item)
                for item in items
            ]
        result = []
        for item in items:
            if isinstance(item, str):
                item = {"currency": item}
            entry = self._parse(FixedRateCurrency, item, "GET /v1/currencies")
            result.append(entry.model_copy(update={"currency": entry.currency.lower()}))
        return result

    async def merchant_coins(self) -> list[str]:
        """``GET /v1/merchant/coins``: the tickers (lower case) enabled for this account."""
        data = await self._send(_Call("GET", "/v1/merchant/coins"))
        return [_ticker(item) for item in _currency_tickers(data)]

    async def min_amount(
        self,
        currency_from: str,
        currency_to: str,
        fiat_equivalent: str | None = None,
        *,
        is_fixed_rate: bool | None = None,
        is_fee_paid_by_user: bool | None = None,
    ) -> MinAmount:
        """``GET /v1/min-amount``: the smallest payment NOWPayments accepts for a pair.

        ``fiat_equivalent`` (a fiat ticker such as ``"usd"``) adds the minimum's
        value in that currency.
        """
        params: dict[str, str] = {"currency_from": currency_from, "currency_to": currency_to}
        if fiat_equivalent:
            params["fiat_equivalent"] = fiat_equivalent
        if is_fixed_rate is not None:
            params["is_fixed_rate"] = _bool_param(is_fixed_rate)
        if is_fee_paid_by_user is not None:
            params["is_fee_paid_by_user"] = _bool_param(is_fee_paid_by_user)
        data = await self._send(_Call("GET", "/v1/min-amount", params=params))
        return self._parse(MinAmount, data, "GET /v1/min-amount")

    async def estimate(self, amount: AmountInput, currency_from: str, currency_to: str) -> Estimate:
        """``GET /v1/estimate``: what ``amount`` of ``currency_from`` is in ``currency_to``."""
        params = {
            "amount": format_amount(_amount_arg("amount", amount)),
            "currency_from": currency_from,
            "currency_to": currency_to,
        }
        data = await self._send(_Call("GET", "/v1/estimate", params=params))
        return self._parse(Estimate, data, "GET /v1/estimate")

    async def create_invoice(
        self,
        price_amount: AmountInput,
        price_currency: str,
        *,
        pay_currency: str | None = None,
        ipn_callback_url: str | None = None,
        order_id: str | None = None,
        order_description: str | None = None,
        success_url: str | None = None,
        cancel_url: str | None = None,
        partially_paid_url: str | None = None,
        is_fixed_rate: bool | None = None,
        is_fee_paid_by_user: bool | None = None,
    ) -> Invoice:
        """``POST /v1/invoice``: a hosted page where the customer picks the coin.

        No payment exists yet; one is created when the customer chooses, and its
        IPNs carry ``invoice_id`` (this invoice's ``id``) and a new ``payment_id``.
        Never retried once it may have reached NOWPayments: on an error with
        ``outcome_unknown`` look the invoice up before creating another.
        """
        body = _compact(
            {
                "price_amount": _amount_arg("price_amount", price_amount),
                "price_currency": price_currency,
                "pay_currency": pay_currency,
                "ipn_callback_url": ipn_callback_url,
                "order_id": order_id,
                "order_description": order_description,
                "success_url": success_url,
                "cancel_url": cancel_url,
                "partially_paid_url": partially_paid_url,
                "is_fixed_rate": is_fixed_rate,
                "is_fee_paid_by_user": is_fee_paid_by_user,
            }
        )
        data = await self._send(_Call("POST", "/v1/invoice", body=encode_json(body), create=True))
        return self._parse(Invoice, data, "POST /v1/invoice", create=True)

    async def create_payment(
        self,
        price_amount: AmountInput,
        price_currency: str,
        pay_currency: str,
        *,
        pay_amount: AmountInput | None = None,
        ipn_callback_url: str | None = None,
        order_id: str | None = None,
        order_description: str | None = None,
        purchase_id: str | int | None = None,
        payout_address: str | None = None,
        payout_currency: str | None = None,
        payout_extra_id: str | None = None,
        is_fixed_rate: bool | None = None,
        is_fee_paid_by_user: bool | None = None,
        case: str | None = None,
    ) -> CreatedPayment:
        """``POST /v1/payment``: a payment in ``pay_currency`` with its deposit address.

        ``purchase_id`` adds a payment to a partially paid purchase. ``case`` is
        understood by NOWPayments' sandbox only (``success``, ``partially_paid``,
        ``failed``, ``expired``...) and chooses the simulated outcome.
        Never retried once it may have reached NOWPayments (see :meth:`create_invoice`).
        """
        body = _compact(
            {
                "price_amount": _amount_arg("price_amount", price_amount),
                "price_currency": price_currency,
                "pay_currency": pay_currency,
                "pay_amount": None if pay_amount is None else _amount_arg("pay_amount", pay_amount),
                "ipn_callback_url": ipn_callback_url,
                "order_id": order_id,
                "order_description": order_description,
                "purchase_id": (
                    None if purchase_id is None else _json_id(_id_arg("purchase_id", purchase_id))
                ),
                "payout_address": payout_address,
                "payout_currency": payout_currency,
                "payout_extra_id": payout_extra_id,
                "is_fixed_rate": is_fixed_rate,
                "is_fee_paid_by_user": is_fee_paid_by_user,
                "case": case,
            }
        )
        data = await self._send(_Call("POST", "/v1/payment", body=encode_json(body), create=True))
        return self._parse(CreatedPayment, data, "POST /v1/payment", create=True)

    async def create_invoice_payment(
        self,
        iid: str | int,
        pay_currency: str,
        *,
        purchase_id: str | int | None = None,
        order_description: str | None = None,
        customer_email: str | None = None,
        payout_address: str | None = None,
        payout_currency: str | None = None,
        payout_extra_id: str | None = None,
        case: str | None = None,
    ) -> CreatedPayment:
        """``POST /v1/invoice-payment``: pay invoice ``iid`` in ``pay_currency``.

        Answers like :meth:`create_payment`. Never retried once it may have
        reached NOWPayments (see :meth:`create_invoice`).
        """
        body = _compact(
            {
                "iid": _json_id(_id_arg("iid", iid)),
                "pay_currency": pay_currency,
                "purchase_id": (
                    None if purchase_id is None else _json_id(_id_arg("purchase_id", purchase_id))
                ),
                "order_description": order_description,
                "customer_email": customer_email,
                "payout_address": payout_address,
                "payout_currency": payout_currency,
                "payout_extra_id": payout_extra_id,
                "case": case,
            }
        )
        data = await self._send(
            _Call("POST", "/v1/invoice-payment", body=encode_json(body), create=True)
        )
        return self._parse(CreatedPayment, data, "POST /v1/invoice-payment", create=True)

    async def get_payment(self, payment_id: str | int) -> PaymentInfo:
        """``GET /v1/payment/{payment_id}``: the payment's current state.

        Needs only the API key. One report has this call demanding a JWT
        (401 ``AUTH_REQUIRED``): then, with credentials configured, it is repeated
        once with a JWT, and later calls send the JWT from the start.
        """
        pid = _id_arg("payment_id", payment_id)
        call = _Call("GET", f"/v1/payment/{quote(pid, safe='')}")
        what = "GET /v1/payment/{id}"
        if self._status_needs_jwt and self.has_credentials:
            return self._parse(PaymentInfo, await self._send_with_jwt(call), what)
        try:
            data = await self._send(call)
        except NowPaymentsApiError as exc:
            if exc.status_code != 401 or not self.has_credentials:
                raise
            logger.info("%s answered 401 %s: repeating with a JWT", what, exc.code)
            self._status_needs_jwt = True
            data = await self._send_with_jwt(call)
        return self._parse(PaymentInfo, data, what)

    async def list_payments(
        self,
        *,
        limit: int = 10,
        page: int = 0,
        sort_by: str | None = None,
        order_by: Literal["asc", "desc"] | None = None,
        date_from: date | datetime | str | None = None,
        date_to: date | datetime | str | None = None,
        invoice_id: str | int | None = None,
    ) -> PaymentList:
        """``GET /v1/payment/``: one page of the account's payments (needs a JWT).

        ``limit`` is 1-500 and ``page`` counts from 0. ``sort_by`` names a field
        (``created_at``, ``payment_id``, ``payment_status``...). Dates are sent as
        ``YYYY-MM-DD`` for a :class:`date` and as UTC ISO text for a :class:`datetime`.
        """
        if not 1 <= limit <= _LIST_LIMIT_MAX:
            raise ValueError(f"limit must be 1..{_LIST_LIMIT_MAX}")
        if page < 0:
            raise ValueError("page counts from 0")
        params: dict[str, str] = {"limit": str(limit), "page": str(page)}
        if sort_by:
            params["sortBy"] = sort_by
        if order_by:
            params["orderBy"] = order_by
        if date_from is not None:
            params["dateFrom"] = _date_param(date_from)
        if date_to is not None:
            params["dateTo"] = _date_param(date_to)
        if invoice_id is not None:
            params["invoiceId"] = _id_arg("invoice_id", invoice_id)
        data = await self._send_with_jwt(_Call("GET", "/v1/payment/", params=params))
        return self._parse(PaymentList, data, "GET /v1/payment/")

    # ---------------------------------------------------------------- JWT

    async def _token(self, stale: str | None = None) -> tuple[str, bool]:
        """A JWT, and whether it was fetched just now.

        ``stale`` is a token the server just refused: it is replaced, unless
        another task has replaced it meanwhile.
        """
        if not self.has_credentials:
            raise MissingCredentialsError(
                "this NOWPayments call needs a JWT: configure the account e-mail and password"
            )
        async with self._jwt_lock:
            token = self._jwt
            if token is not None and token != stale and time.monotonic() < self._jwt_renew_at:
                return token, False
            body = encode_json({"email": self._email, "password": self._password})
            started = time.monotonic()
            data = await self._send(_Call("POST", "/v1/auth", body=body))
            new = data.get("token") if isinstance(data, Mapping) else None
            if not isinstance(new, str) or not new:
                raise NowPaymentsPayloadError("POST /v1/auth: no token in the answer")
            if self._jwt:
                # Kept for redaction: an error message could still quote it.
                self._old_jwts = [self._jwt, *self._old_jwts][:2]
            self._jwt = new
            lifetime = _jwt_lifetime(new)
            self._jwt_renew_at = started + lifetime - min(JWT_RENEW_MARGIN, lifetime / 5)
            return new, True

    async def _send_with_jwt(self, call: _Call) -> Any:
        token, fresh = await self._token()
        try:
            return await self._send(call, bearer=token)
        except NowPaymentsApiError as exc:
            # A cached token may have been revoked or expired early: renew once.
            if exc.status_code != 401 or fresh:
                raise
            token, _ = await self._token(stale=token)
            return await self._send(call, bearer=token)

    # ---------------------------------------------------------------- transport

    @property
    def _secrets(self) -> tuple[str, ...]:
        return (self._api_key, self._password, self._jwt or "", *self._old_jwts)

    def _parse(
        self, model: type[_ModelT], data: object, what: str, *, create: bool = False
    ) -> _ModelT:
        try:
            return model.parse_mapping(data)
        except NowPaymentsPayloadError as exc:
            # A create answered 2xx, so the object probably exists even though
            # the answer is unreadable: the caller must reconcile, not repeat.
            raise NowPaymentsPayloadError(
                redact(f"{what}: {exc}", self._secrets), outcome_unknown=create
            ) from exc

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self._max_retry_after)
        ceiling = min(self._max_backoff, self._backoff_base * 2 ** (attempt - 1))
        # Full jitter: clients that failed together do not come back together.
        return random.uniform(0.0, ceiling)  # noqa: S311 - timing jitter, not security

    async def _send(self, call: _Call, *, bearer: str | None = None) -> Any:
        """Send one call with the retry policy; return its decoded JSON answer.

        Retry policy. Reads (GET) and ``POST /v1/auth`` change nothing on the
        server, so they are repeated on 429, 5xx, timeouts and connection errors.
        A create (invoice, payment, invoice payment) is different: NOWPayments
        offers no idempotency key, so if a first attempt reached the server and
        only its answer was lost, a repeat makes a second payment that a customer
        may pay. A create is therefore repeated only after failures that prove
        nothing was sent (no connection could be made: ``httpx.ConnectError``,
        connect or pool timeout). After a 5xx, a read/write timeout or a
        connection dropped mid-request, it raises with ``outcome_unknown=True``
        so the caller reconciles (looks the order up) before trying again. A 429
        on a create is raised too (``retry_after`` tells when to come back).
        """
        headers: dict[str, str] = {}
        if call.api_key:
            headers["x-api-key"] = self._api_key
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        if call.body is not None:
            headers["Content-Type"] = "application/json"
        safe = not call.create
        attempt = 0
        while True:
            attempt += 1
            started = time.monotonic()
            try:
                response = await self._http.request(
                    call.method, call.path, params=call.params, content=call.body, headers=headers
                )
            except httpx.TransportError as exc:
                elapsed = (time.monotonic() - started) * 1000
                not_sent = isinstance(exc, _NOT_SENT)
                reason = redact(f"{type(exc).__name__}: {exc}", self._secrets)
                logger.warning(
                    "NOWPayments %s %s failed after %.0f ms (attempt %d): %s",
                    call.method,
                    call.path,
                    elapsed,
                    attempt,
                    reason,
                    extra={"np_method": call.method, "np_path": call.path, "np_attempt": attempt},
                )
                if (
                    not isinstance(exc, _FATAL)
                    and (safe or not_sent)
                    and attempt <= self._max_retries
                ):
                    await asyncio.sleep(self._delay(attempt, None))
                    continue
                outcome_unknown = call.create and not not_sent
                note = " (the request may have been processed)" if outcome_unknown else ""
                raise NowPaymentsUnavailable(
                    f"NOWPayments {call.method} {call.path} failed after {attempt} "
                    f"attempt(s): {reason}{note}",
                    method=call.method,
                    path=call.path,
                    attempts=attempt,
                    outcome_unknown=outcome_unknown,
                ) from None

            elapsed = (time.monotonic() - started) * 1000
            request_id = response.headers.get("x-request-id") or response.headers.get("cf-ray")
            logger.info(
                "NOWPayments %s %s -> %d in %.0f ms (request id %s, attempt %d)",
                call.method,
                call.path,
                response.status_code,
                elapsed,
                request_id or "-",
                attempt,
                extra={
                    "np_method": call.method,
                    "np_path": call.path,
                    "np_status": response.status_code,
                    "np_elapsed_ms": round(elapsed),
                    "np_request_id": request_id,
                    "np_attempt": attempt,
                },
            )
            if response.is_success:
                try:
                    return loads_exact(response.content)
                except ValueError as exc:
                    raise NowPaymentsPayloadError(
                        f"NOWPayments {call.method} {call.path} answered "
                        f"{response.status_code} with a body that is not JSON "
                        f"(request id {request_id or '-'})",
                        outcome_unknown=call.create,
                    ) from exc

            retry_after = _retry_after(response.headers.get("retry-after"))
            retryable = response.status_code == 429 or response.status_code >= 500
            if retryable and safe and attempt <= self._max_retries:
                await asyncio.sleep(self._delay(attempt, retry_after))
                continue
            raise api_error_from_response(
                response.status_code,
                response.content,
                reason=response.reason_phrase,
                request_id=request_id,
                method=call.method,
                path=call.path,
                retry_after=retry_after,
                outcome_unknown=call.create and response.status_code >= 500,
                secrets=self._secrets,
            )


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = (moment - datetime.now(UTC)).total_seconds()
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(seconds, 0.0)

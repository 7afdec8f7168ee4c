"""NOWPayments answers and IPN bodies as typed models, and the parsers behind them.

NOWPayments is inconsistent about types:
``payment_id`` is a string when a payment is created and a number everywhere
else, the invoice id is a string ``id`` at creation and a number ``invoice_id``
later, amounts come as JSON numbers or strings, and ``updated_at`` is ISO text
in REST answers but epoch milliseconds in recent IPNs. The models accept every
form and normalise:

* ids -> ``str`` (:func:`parse_id`),
* amounts -> :class:`~decimal.Decimal` with the exact digits that were sent
  (:func:`parse_amount`; floats are refused, because a float has already lost them),
* timestamps -> timezone-aware UTC :class:`~datetime.datetime` (:func:`parse_timestamp`),
* ``payment_status`` -> :class:`ProviderPaymentStatus`, or the raw word when
  NOWPayments invents a new one.

Unknown fields are kept (``extra="allow"``; read them from ``model_extra``), so a
field NOWPayments adds tomorrow is neither rejected nor lost.

JSON must be decoded with :func:`loads_exact` (``parse_float=Decimal``) so that
numbers keep their text: ``0.1`` stays ``Decimal("0.1")`` instead of the float
``0.1000000000000000055...``. The shop's IPN endpoint uses
:meth:`PaymentInfo.from_ipn_body` on the raw request bytes.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, NoReturn, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationError,
)

from cryptocheckout.nowpayments.errors import NowPaymentsPayloadError

__all__ = [
    "Amount",
    "CreatedPayment",
    "Estimate",
    "Fee",
    "FixedRateCurrency",
    "Id",
    "Invoice",
    "MinAmount",
    "NowPaymentsModel",
    "PaymentInfo",
    "PaymentList",
    "ProviderPaymentStatus",
    "Timestamp",
    "format_amount",
    "is_payment_notification",
    "loads_exact",
    "parse_amount",
    "parse_id",
    "parse_status",
    "parse_timestamp",
]


class ProviderPaymentStatus(StrEnum):
    """Payment statuses as NOWPayments words them. Only ``FINISHED`` means fully paid."""

    WAITING = "waiting"
    CONFIRMING = "confirming"
    CONFIRMED = "confirmed"
    SENDING = "sending"
    PARTIALLY_PAID = "partially_paid"
    FINISHED = "finished"
    FAILED = "failed"
    REFUNDED = "refunded"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


# What JSON allows for a number, optionally quoted: no "NaN", "Infinity", "0x10",
# "1_000" or surrounding junk, all of which Decimal() itself would accept.
_NUMBER_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
# Below this an epoch number cannot be milliseconds of a NOWPayments event
# (1e11 ms is March 1973) and is read as seconds instead; 1e11 s is year 5138.
_EPOCH_SECONDS_LIMIT = 10**11
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a valid JSON number")


def loads_exact(raw: bytes | str) -> Any:
    """Decode JSON with every non-integer number as an exact :class:`Decimal`.

    ``NaN``, ``Infinity`` and ``-Infinity`` (which Python's decoder would
    otherwise accept) raise :class:`ValueError`, as do malformed documents.
    """
    return json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parse_amount(value: object) -> Decimal | None:
    """Read an amount sent as a JSON number or a numeric string.

    ``None`` and ``""`` mean "not given" and give ``None``. A ``float`` is refused:
    it has already lost the digits NOWPayments sent (decode with :func:`loads_exact`).
    Raises :class:`ValueError` for anything else that is not a finite number.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"not an amount: {_describe(value)}")
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"not a finite amount: {_describe(value)}")
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        raise ValueError(
            f"amount {_describe(value)} is a float, which has lost its exact digits: "
            "decode JSON with parse_float=Decimal (loads_exact)"
        )
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if not _NUMBER_TEXT.fullmatch(text):
            raise ValueError(f"not a decimal amount: {_describe(value)}")
        return Decimal(text)
    raise ValueError(f"not an amount: {_describe(value)}")


def parse_id(value: object) -> str | None:
    """Read an id sent as a string or a JSON number, as a string.

    ``None`` and ``""`` give ``None``. Integral numbers lose any fraction or
    exponent notation (``5077149092``, ``5077149092.0`` and ``5.077149092e9`` all
    give ``"5077149092"``); strings are kept as sent, apart from surrounding space.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"not an id: {_describe(value)}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite() or value != value.to_integral_value():
            raise ValueError(f"not an integral id: {_describe(value)}")
        return str(int(value))
    if isinstance(value, float):
        raise ValueError(
            f"id {_describe(value)} is a float, which may have lost digits: "
            "decode JSON with parse_float=Decimal (loads_exact)"
        )
    if isinstance(value, str):
        return value.strip() or None
    raise ValueError(f"not an id: {_describe(value)}")


def _from_epoch(number: Decimal) -> datetime:
    # Decimal arithmetic first, so milliseconds are not rounded through a float.
    scale = 1_000_000 if abs(number) < _EPOCH_SECONDS_LIMIT else 1_000
    micros = number * scale
    try:
        return _EPOCH + timedelta(microseconds=int(micros.to_integral_value()))
    except OverflowError as exc:
        raise ValueError(f"timestamp out of range: {number}") from exc


def parse_timestamp(value: object) -> datetime | None:
    """Read a timestamp as a timezone-aware UTC datetime.

    Accepts ISO 8601 text (``2023-05-30T14:11:00.170Z``; without an offset it
    is taken as UTC) and epoch milliseconds as a number or a string of digits
    (``1685455860170``). Numbers too small to be milliseconds of a date after
    1973 are read as epoch seconds. ``None`` and ``""`` give ``None``.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a timestamp: {_describe(value)}")
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int):
        return _from_epoch(Decimal(value))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"not a timestamp: {_describe(value)}")
        return _from_epoch(value)
    elif isinstance(value, float):
        raise ValueError(f"timestamp {_describe(value)} is a float: decode with loads_exact")
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if _NUMBER_TEXT.fullmatch(text):
            return _from_epoch(Decimal(text))
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"not an ISO 8601 timestamp: {_describe(value)}") from None
    else:
        raise ValueError(f"not a timestamp: {_describe(value)}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_status(value: object) -> ProviderPaymentStatus | str:
    """Read ``payment_status``: a known word as the enum, an unknown one kept as given."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"not a payment status: {_describe(value)}")
    word = value.strip()
    try:
        return ProviderPaymentStatus(word.lower())
    except ValueError:
        return word


def parse_text(value: object) -> str | None:
    """Read a free-text field that NOWPayments may send as a number (``order_id``...)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise ValueError(f"not text: {_describe(value)}")
    if isinstance(value, int | Decimal):
        return str(value)
    raise ValueError(f"not text: {_describe(value)}")


def format_amount(value: Decimal) -> str:
    """Write an amount in plain notation from its own digits: ``1E-7`` -> ``0.0000001``."""
    if not value.is_finite():
        raise ValueError(f"not a finite amount: {value}")
    return format(value, "f")


def _required_id(value: object) -> str:
    result = parse_id(value)
    if result is None:
        raise ValueError("an id is required")
    return result


def _serialise_amount(value: Decimal | None) -> str | None:
    return None if value is None else format_amount(value)


def _serialise_timestamp(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


Amount = Annotated[
    Decimal | None,
    PlainValidator(parse_amount),
    PlainSerializer(_serialise_amount, when_used="json"),
]
"""An optional amount, exact, from a JSON number or string; JSON dumps give plain-notation text."""

Id = Annotated[str | None, PlainValidator(parse_id)]
"""An optional id, from a JSON string or number."""

RequiredId = Annotated[str, PlainValidator(_required_id)]

Timestamp = Annotated[
    datetime | None,
    PlainValidator(parse_timestamp),
    PlainSerializer(_serialise_timestamp, when_used="json"),
]
"""An optional UTC datetime, from ISO text or epoch milliseconds."""

Text = Annotated[str | None, PlainValidator(parse_text)]

Status = Annotated[ProviderPaymentStatus | str, PlainValidator(parse_status)]


class NowPaymentsModel(BaseModel):
    """Base of the NOWPayments models: unknown fields kept, values frozen."""

    # extra="allow": NOWPayments adds fields over time; they must neither fail
    # parsing nor be dropped (they land in model_extra).
    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    @classmethod
    def parse_json_bytes(cls, raw: bytes | str) -> Self:
        """Parse a JSON document exactly (see :func:`loads_exact`) into this model.

        Raises :class:`NowPaymentsPayloadError` (a :class:`ValueError`) naming the
        offending fields when the body is not JSON, not an object, or invalid.
        """
        try:
            data = loads_exact(raw)
        except ValueError as exc:
            raise NowPaymentsPayloadError(f"{cls.__name__}: not valid JSON: {exc}") from exc
        return cls.parse_mapping(data)

    @classmethod
    def parse_mapping(cls, data: object) -> Self:
        """Validate an already decoded JSON object, raising :class:`NowPaymentsPayloadError`."""
        if not isinstance(data, dict):
            raise NowPaymentsPayloadError(
                f"{cls.__name__}: expected a JSON object, got {type(data).__name__}"
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise NowPaymentsPayloadError(f"{cls.__name__}: {_summarise(exc)}") from exc


def _summarise(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


class Fee(NowPaymentsModel):
    """The ``fee`` object of a payment or IPN (NOWPayments writes its keys in camelCase)."""

    currency: Text = None
    deposit_fee: Amount = Field(default=None, alias="depositFee")
    service_fee: Amount = Field(default=None, alias="serviceFee")
    withdrawal_fee: Amount = Field(default=None, alias="withdrawalFee")


class PaymentInfo(NowPaymentsModel):
    """A payment's state: a ``GET /v1/payment/{id}`` answer, a list item, or an IPN body.

    ``payment_id`` and ``payment_status`` are required; every other field may be
    missing or null. ``invoice_id`` is set for payments made on an invoice's page;
    ``parent_payment_id`` marks a repeated deposit to an address already used
    (never fulfil an order twice because of it).
    """

    payment_id: RequiredId
    payment_status: Status
    invoice_id: Id = None
    parent_payment_id: Id = None
    purchase_id: Id = None
    order_id: Text = None
    order_description: Text = None
    pay_address: Text = None
    payin_extra_id: Text = None
    payment_extra_ids: Any = None
    price_amount: Amount = None
    price_currency: Text = None
    pay_amount: Amount = None
    pay_currency: Text = None
    actually_paid: Amount = None
    actually_paid_at_fiat: Amount = None
    outcome_amount: Amount = None
    outcome_currency: Text = None
    payin_hash: Text = None
    payout_hash: Text = None
    fee: Fee | None = None
    created_at: Timestamp = None
    updated_at: Timestamp = None

    @classmethod
    def from_ipn_body(cls, raw: bytes | str) -> Self:
        """Parse the raw body of a payment IPN, keeping every amount exact.

        Call it with the request bytes *after* the signature was verified. Raises
        :class:`NowPaymentsPayloadError` (a :class:`ValueError`) when the body is not
        a JSON object of a payment; payout notifications (no ``payment_id``) do
        not parse: check them with :func:`is_payment_notification` first.
        """
        return cls.parse_json_bytes(raw)

    @property
    def status(self) -> str:
        """The status word as NOWPayments sent it (enum members are ``str`` too)."""
        return str(self.payment_status)

    @property
    def status_known(self) -> bool:
        """False when NOWPayments sent a status word this code does not know yet."""
        return isinstance(self.payment_status, ProviderPaymentStatus)

    @property
    def is_repeat_deposit(self) -> bool:
        """A further deposit to an address already used: a new payment with a parent."""
        return self.parent_payment_id is not None


def is_payment_notification(data: object) -> bool:
    """Tell a payment IPN from a payout notification (same header and secret).

    Payment IPNs carry ``payment_id`` and ``payment_status``; payout ones carry
    ``id``, ``batch_withdrawal_id`` and ``status`` instead.
    """
    return (
        isinstance(data, dict)
        and data.get("payment_id") not in (None, "")
        and data.get("payment_status") not in (None, "")
    )


class CreatedPayment(NowPaymentsModel):
    """Answer of ``POST /v1/payment`` and ``POST /v1/invoice-payment``.

    ``payin_extra_id`` is the memo/destination tag the customer MUST send for
    coins such as XRP and XLM: show it next to ``pay_address`` whenever it is set.
    """

    payment_id: RequiredId
    payment_status: Status = ProviderPaymentStatus.WAITING
    pay_address: Text = None
    payin_extra_id: Text = None
    price_amount: Amount = None
    price_currency: Text = None
    pay_amount: Amount = None
    pay_currency: Text = None
    amount_received: Amount = None
    order_id: Text = None
    order_description: Text = None
    ipn_callback_url: Text = None
    purchase_id: Id = None
    invoice_id: Id = None
    network: Text = None
    expiration_estimate_date: Timestamp = None
    valid_until: Timestamp = None
    created_at: Timestamp = None
    updated_at: Timestamp = None


class Invoice(NowPaymentsModel):
    """Answer of ``POST /v1/invoice``. No payment exists until the customer picks a coin.

    ``id`` is the invoice id (a string here, ``invoice_id`` as a number in later
    payments and IPNs; both normalise to the same string). Send the customer to
    ``invoice_url``.
    """

    id: RequiredId
    token_id: Text = None
    order_id: Text = None
    order_description: Text = None
    price_amount: Amount = None
    price_currency: Text = None
    pay_currency: Text = None
    ipn_callback_url: Text = None
    invoice_url: Text = None
    success_url: Text = None
    cancel_url: Text = None
    partially_paid_url: Text = None
    is_fixed_rate: bool | None = None
    is_fee_paid_by_user: bool | None = None
    created_at: Timestamp = None
    updated_at: Timestamp = None


class MinAmount(NowPaymentsModel):
    """Answer of ``GET /v1/min-amount``: the smallest payable amount in ``currency_from``."""

    currency_from: Text = None
    currency_to: Text = None
    min_amount: Amount = None
    fiat_equivalent: Amount = None


class Estimate(NowPaymentsModel):
    """Answer of ``GET /v1/estimate``."""

    currency_from: Text = None
    amount_from: Amount = None
    currency_to: Text = None
    estimated_amount: Amount = None


class FixedRateCurrency(NowPaymentsModel):
    """One item of ``GET /v1/currencies?fixed_rate=true``."""

    currency: str
    min_amount: Amount = None
    max_amount: Amount = None


class PaymentList(NowPaymentsModel):
    """Answer of ``GET /v1/payment/``: one page of payments (``page`` counts from 0)."""

    data: list[PaymentInfo] = Field(default_factory=list)
    limit: int | None = None
    page: int | None = None
    pages_count: int | None = Field(default=None, alias="pagesCount")
    total: int | None = None

"""The sandbox's memory: invoices, payments, notifications, faults and runtime settings.

Everything lives in one :class:`Store` behind one lock. Endpoints and background tasks run
on the server's event loop and never await while holding the lock, so the lock matters only
if a caller reaches in from another thread (a test, a demo), and then it keeps them consistent.
"""

from __future__ import annotations

import asyncio
import random
import string
import threading
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from cryptocheckout.sandbox import coins
from cryptocheckout.sandbox.config import SandboxConfig

__all__ = [
    "Attempt",
    "Chaos",
    "ChaosOverride",
    "DeliveryState",
    "Fault",
    "Invoice",
    "Notification",
    "Payment",
    "RequestRecord",
    "RuntimeSettings",
    "Status",
    "Store",
    "utcnow",
]

# Fixed-rate quotes hold about 20 minutes; floating ones wait a week for the coins.
FIXED_RATE_LIFETIME = timedelta(minutes=20)
FLOATING_LIFETIME = timedelta(days=7)
REQUEST_LOG_SIZE = 1000


class Status(StrEnum):
    """Payment statuses as NOWPayments words them.

    The sandbox keeps its own list rather than the client's: it is the other side of the
    wire, and a word the client misspelt must not be misspelt here in the same way.
    """

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


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Chaos:
    """How notifications are disturbed on their way out."""

    duplicates: int = 0
    delay: float = 0.0
    reorder: bool = False


@dataclass
class ChaosOverride:
    """Chaos set on one invoice or payment; ``None`` inherits from the level above."""

    duplicates: int | None = None
    delay: float | None = None
    reorder: bool | None = None

    def over(self, base: Chaos) -> Chaos:
        return Chaos(
            duplicates=base.duplicates if self.duplicates is None else self.duplicates,
            delay=base.delay if self.delay is None else self.delay,
            reorder=base.reorder if self.reorder is None else self.reorder,
        )


@dataclass
class RuntimeSettings:
    """Settings the control API may change while the sandbox runs."""

    step_delay: float
    resend_attempts: int
    resend_interval: float
    ipn_timeout: float
    jwt_ttl: float
    chaos: Chaos = field(default_factory=Chaos)
    # One older report says the real status call once demanded a JWT as well.
    status_requires_jwt: bool = False
    # Production once sent pay_amount as a string; this makes every amount a string.
    amounts_as_strings: bool = False

    @classmethod
    def from_config(cls, config: SandboxConfig) -> RuntimeSettings:
        return cls(
            step_delay=config.step_delay,
            resend_attempts=config.resend_attempts,
            resend_interval=config.resend_interval,
            ipn_timeout=config.ipn_timeout,
            jwt_ttl=config.jwt_ttl,
        )


@dataclass
class Invoice:
    id: int
    token_id: str
    price_amount: Decimal
    price_currency: str
    pay_currency: str | None
    order_id: str | None
    order_description: str | None
    ipn_callback_url: str | None
    success_url: str | None
    cancel_url: str | None
    partially_paid_url: str | None
    is_fixed_rate: bool
    is_fee_paid_by_user: bool
    created_at: datetime
    updated_at: datetime
    chaos: ChaosOverride = field(default_factory=ChaosOverride)
    payment_ids: list[int] = field(default_factory=list)


@dataclass
class Payment:
    id: int
    purchase_id: int
    invoice_id: int | None
    parent_payment_id: int | None
    status: Status
    pay_address: str
    payin_extra_id: str | None
    price_amount: Decimal
    price_currency: str
    pay_amount: Decimal
    pay_currency: str
    outcome_currency: str
    order_id: str | None
    order_description: str | None
    ipn_callback_url: str | None
    is_fixed_rate: bool
    is_fee_paid_by_user: bool
    case: str | None
    created_at: datetime
    updated_at: datetime
    valid_until: datetime
    actually_paid: Decimal = Decimal(0)
    payin_hash: str | None = None
    payout_hash: str | None = None
    chaos: ChaosOverride = field(default_factory=ChaosOverride)
    history: list[tuple[Status, datetime]] = field(default_factory=list)

    @property
    def coin(self) -> coins.Coin:
        return coins.COINS[self.pay_currency]

    def fee_parts(self) -> tuple[Decimal, Decimal]:
        return coins.fees(self.actually_paid, self.coin)

    def outcome_amount(self) -> Decimal:
        """What the merchant receives: the amount paid (or quoted) less NOWPayments' fees."""
        base = self.actually_paid if self.actually_paid > 0 else self.pay_amount
        service, withdrawal = coins.fees(base, self.coin)
        net = max(base - service - withdrawal, Decimal(0))
        return coins.floor_crypto(coins.convert(net, self.pay_currency, self.outcome_currency))

    def actually_paid_at_fiat(self) -> Decimal:
        value = coins.convert(self.actually_paid, self.pay_currency, self.price_currency)
        return value.quantize(coins.quantum(self.price_currency))


class DeliveryState(StrEnum):
    HELD = "held"  # kept back so a later status can overtake it
    SCHEDULED = "scheduled"  # waiting out a chaos delay or its turn
    RETRYING = "retrying"  # answered with an error, a resend is due
    DELIVERED = "delivered"
    FAILED = "failed"  # every resend answered with an error
    CANCELLED = "cancelled"  # dropped by a reset

    @property
    def settled(self) -> bool:
        return self in (DeliveryState.DELIVERED, DeliveryState.FAILED, DeliveryState.CANCELLED)


@dataclass
class Attempt:
    number: int
    at: datetime
    status_code: int | None
    response_body: str
    error: str | None
    duration_ms: int


@dataclass
class Notification:
    id: int
    payment_id: int
    invoice_id: int | None
    payment_status: Status
    url: str
    body: bytes
    signature: str
    created_at: datetime
    # "status" for a status change, "duplicate" for a chaos copy, "resend" for a manual one.
    reason: str
    duplicate_of: int | None = None
    state: DeliveryState = DeliveryState.SCHEDULED
    attempts: list[Attempt] = field(default_factory=list)


@dataclass
class Fault:
    """Answer the next ``remaining`` matching API calls with ``status`` (or only slow them)."""

    id: int
    path: str
    method: str | None
    status: int | None
    remaining: int
    retry_after: str | None
    delay: float
    html: bool
    hits: int = 0

    def matches(self, method: str, path: str, route: str | None) -> bool:
        if self.method is not None and self.method != method:
            return False
        if self.path.endswith("*"):
            return path.startswith(self.path[:-1])
        return self.path in (path, route)


@dataclass
class RequestRecord:
    at: datetime
    request_id: str
    method: str
    path: str
    query: str
    status: int
    api_key: str  # "valid", "invalid" or "missing": never the key itself
    bearer: bool
    content_type: str | None
    body: str | None


class Store:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.lock = threading.RLock()
        self._random = random.Random(config.seed) if config.seed is not None else random.Random()  # noqa: S311 - fake ids, not secrets
        self.settings = RuntimeSettings.from_config(config)
        self.invoices: dict[int, Invoice] = {}
        self.payments: dict[int, Payment] = {}
        self.notifications: list[Notification] = []
        self.faults: list[Fault] = []
        self.requests: deque[RequestRecord] = deque(maxlen=REQUEST_LOG_SIZE)
        self._used_ids: set[int] = set()
        self._next_serial = 1
        self._changed = asyncio.Event()

    def reset(self) -> None:
        with self.lock:
            self.settings = RuntimeSettings.from_config(self.config)
            self.invoices.clear()
            self.payments.clear()
            self.notifications.clear()
            self.faults.clear()
            self.requests.clear()
            self._next_serial = 1
            self.touch()

    # -- change notification for long polls ---------------------------------------------

    def touch(self) -> None:
        """Wake everyone waiting in :meth:`wait_for_change`."""
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    def change_event(self) -> asyncio.Event:
        # Take the event before checking a condition, then wait on it: no wake-up is lost.
        return self._changed

    # -- ids ------------------------------------------------------------------------------

    def new_id(self) -> int:
        """A fresh 10-digit id, shared by invoices, payments and purchases like the real ones."""
        with self.lock:
            while True:
                candidate = self._random.randint(4_000_000_000, 6_999_999_999)
                if candidate not in self._used_ids:
                    self._used_ids.add(candidate)
                    return candidate

    def new_token(self) -> str:
        alphabet = string.ascii_letters + string.digits
        return "".join(self._random.choice(alphabet) for _ in range(9))

    def serial(self) -> int:
        with self.lock:
            value = self._next_serial
            self._next_serial += 1
            return value

    # -- records --------------------------------------------------------------------------

    def add_invoice(self, invoice: Invoice) -> None:
        with self.lock:
            self.invoices[invoice.id] = invoice
            self.touch()

    def add_payment(self, payment: Payment) -> None:
        with self.lock:
            self.payments[payment.id] = payment
            if payment.invoice_id is not None and payment.invoice_id in self.invoices:
                self.invoices[payment.invoice_id].payment_ids.append(payment.id)
            self.touch()

    def payments_of_purchase(self, purchase_id: int) -> list[Payment]:
        with self.lock:
            return [p for p in self.payments.values() if p.purchase_id == purchase_id]

    def add_notification(self, notification: Notification) -> None:
        with self.lock:
            self.notifications.append(notification)
            self.touch()

    def copy_notification(self, original: Notification, reason: str) -> Notification:
        copy = replace(
            original,
            id=self.serial(),
            created_at=utcnow(),
            reason=reason,
            duplicate_of=original.id,
            state=DeliveryState.SCHEDULED,
            attempts=[],
        )
        self.add_notification(copy)
        return copy

    def effective_chaos(self, payment: Payment) -> Chaos:
        with self.lock:
            chaos = self.settings.chaos
            invoice = self.invoices.get(payment.invoice_id) if payment.invoice_id else None
            if invoice is not None:
                chaos = invoice.chaos.over(chaos)
            return payment.chaos.over(chaos)

    def take_fault(self, method: str, path: str, route: str | None) -> Fault | None:
        """Consume one use of the first fault matching this call, if any."""
        with self.lock:
            for fault in self.faults:
                if fault.matches(method, path, route):
                    fault.remaining -= 1
                    fault.hits += 1
                    if fault.remaining <= 0:
                        self.faults.remove(fault)
                    return replace(fault)
            return None

    def valid_until(self, created_at: datetime, is_fixed_rate: bool) -> datetime:
        return created_at + (FIXED_RATE_LIFETIME if is_fixed_rate else FLOATING_LIFETIME)

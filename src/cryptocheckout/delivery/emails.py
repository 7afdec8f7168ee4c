"""The order e-mails, rendered from Jinja2 templates in plain text and HTML.

Short, and never the keys themselves: the fulfilled mail carries the delivery link, which
expires, rather than keys that would sit in a mailbox for ever.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from cryptocheckout.kit.mail import Mail

_templates = Environment(
    loader=PackageLoader("cryptocheckout.delivery", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

SUBJECTS = {
    "fulfilled": "Your order is ready: your keys are waiting",
    "resend": "A new link to your keys",
    "underpaid": "Your payment arrived short",
    "expired": "Your payment expired",
    "failed": "Your payment did not go through",
}
EVENTS = frozenset(SUBJECTS)


@dataclass(frozen=True)
class Underpayment:
    """What arrived and what is missing, in the pay currency (and the order's, if known)."""

    paid: Decimal
    expected: Decimal
    pay_currency: str
    missing_in_order_currency: str | None = None

    @property
    def missing(self) -> Decimal:
        return max(self.expected - self.paid, Decimal(0))


@dataclass(frozen=True)
class OrderSummary:
    """What every order e-mail shows, so that a customer with two orders tells them apart."""

    number: str
    items: tuple[tuple[str, int], ...]
    total: str


def event_kind(event: str) -> str:
    """`resend-3` (the third fresh link) is a `resend`; other events are their own kind."""
    kind = event.split("-", 1)[0]
    if kind not in EVENTS:
        raise ValueError(f"no e-mail for event {event!r}")
    return kind


def render(
    event: str,
    *,
    to: str,
    shop_name: str,
    order: OrderSummary,
    support_email: str,
    **context: Any,
) -> Mail:
    kind = event_kind(event)
    values = {
        "shop_name": shop_name,
        "kind": kind,
        "order": order,
        "support_email": support_email,
        **context,
    }
    return Mail(
        to=to,
        subject=f"{SUBJECTS[kind]}: order {order.number} ({shop_name})",
        text=_templates.get_template(f"email/{kind}.txt").render(values),
        html=_templates.get_template(f"email/{kind}.html").render(values),
    )

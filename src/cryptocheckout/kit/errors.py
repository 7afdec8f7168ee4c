"""Domain errors: what a service refuses, named, and free of HTTP.

Services raise these and know nothing of status codes or request bodies. The API maps them
to problem+json in one place (`kit/problems.py`); the pages render the same errors beside
their form fields. A field is named by its path in the caller's input (`("email",)`,
`("items", 0, "quantity")`), without the transport's prefix (`body`, `query`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True)
class FieldIssue:
    """One problem with one input field."""

    loc: tuple[str | int, ...]
    message: str
    code: str = "value_error"


class DomainError(Exception):
    """A rule of the domain refused the request. `kind` says how the caller went wrong."""

    kind: ClassVar[str] = "invalid"
    code: ClassVar[str] = "invalid"

    def __init__(self, detail: str, fields: Sequence[FieldIssue] = ()) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fields = tuple(fields)


# The kinds, each mapped to one HTTP status by the API.
class Invalid(DomainError):
    """The input breaks a rule (422)."""

    kind = "invalid"
    code = "validation-error"


class NotFound(DomainError):
    """The thing asked for does not exist, or the caller may not know that it does (404)."""

    kind = "not_found"
    code = "not-found"

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} not found")
        self.what = what


class Conflict(DomainError):
    """The request cannot apply to the thing in its current state (409)."""

    kind = "conflict"
    code = "conflict"


class Unavailable(DomainError):
    """Another service we depend on refused or did not answer (502)."""

    kind = "unavailable"
    code = "provider-error"


# Catalogue
class SkuTaken(Conflict):
    code = "conflict"

    def __init__(self, sku: str) -> None:
        super().__init__(
            f"A product with sku {sku!r} exists already.",
            [FieldIssue(("sku",), "already exists", "sku_taken")],
        )
        self.sku = sku


class InvalidPrice(Invalid):
    def __init__(self) -> None:
        super().__init__("The price must be positive.", [FieldIssue(("price",), "must be above 0")])


# Orders
class UnorderableItems(Invalid):
    """Unknown or inactive products in an order."""


class MixedCurrencies(Invalid):
    pass


class OutOfStock(Invalid):
    pass


class TotalTooLarge(Invalid):
    pass


class OrderClosed(Conflict):
    """The order needs no (further) payment."""

    code = "order-closed"


# Payments
class ProviderRefused(Unavailable):
    """NOWPayments refused to open a payment, or its answer is unknown."""

    code = "provider-error"

    def __init__(self, provider_code: str) -> None:
        super().__init__(f"NOWPayments refused or did not answer: {provider_code}")
        self.provider_code = provider_code

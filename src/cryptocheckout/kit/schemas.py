"""Request and response field types shared by the domains' schemas."""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    PlainSerializer,
    StringConstraints,
    WithJsonSchema,
)

from cryptocheckout.kit.money import MONEY_PRECISION, MONEY_SCALE, format_money, to_money


def _reject_invisible(value: str) -> str:
    # NUL cannot be stored in PostgreSQL text and a lone surrogate cannot be encoded as
    # UTF-8: both would surface as a 500 at the database, so they are refused here.
    for char in value:
        category = unicodedata.category(char)
        if category in ("Cc", "Cs") and char not in "\t":
            raise ValueError("must not contain control characters or lone surrogates")
    return value


SafeText = Annotated[str, AfterValidator(_reject_invisible)]

_MONEY_TEXT = re.compile(
    rf"^(0|[1-9][0-9]{{0,{MONEY_PRECISION - MONEY_SCALE - 1}}})(\.[0-9]{{1,{MONEY_SCALE}}})?$"
)


def _parse_money_text(value: object) -> Decimal:
    if not isinstance(value, str):
        raise ValueError('must be a string, e.g. "12.50" (a JSON number would pass through float)')
    if len(value) > 40 or not _MONEY_TEXT.match(value):
        raise ValueError(
            "must be a decimal string in plain notation with at most "
            f"{MONEY_PRECISION - MONEY_SCALE} integer digits and {MONEY_SCALE} decimals, "
            'e.g. "12.50"'
        )
    return to_money(value)


# Money in requests is a string ("12.50"): a JSON number would pass through float.
MoneyIn = Annotated[
    Decimal,
    BeforeValidator(_parse_money_text),
    WithJsonSchema({"type": "string", "pattern": _MONEY_TEXT.pattern, "examples": ["12.50"]}),
]
MoneyOut = Annotated[Decimal, PlainSerializer(format_money, return_type=str)]

Currency = Annotated[
    str,
    StringConstraints(strict=True, pattern=r"^[A-Za-z]{3,10}$", to_upper=True),
]


class RequestModel(BaseModel):
    # Unknown fields are ignored (a client-sent price, say): the server decides amounts.
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=False)


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)

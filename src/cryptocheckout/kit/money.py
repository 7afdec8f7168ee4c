"""Money is Decimal, with the scale of the database columns and a named rounding mode."""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal, InvalidOperation

# numeric(20, 8): twelve integer digits and eight decimals, exact on both databases.
MONEY_PRECISION = 20
MONEY_SCALE = 8
MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_SCALE)
MAX_MONEY = Decimal(10) ** (MONEY_PRECISION - MONEY_SCALE) - MONEY_QUANTUM
ROUNDING = ROUND_HALF_EVEN


def to_money(value: Decimal | int | str) -> Decimal:
    """The amount at the columns' scale; refuses what the columns cannot hold exactly."""
    try:
        amount = value if isinstance(value, Decimal) else Decimal(value)
    except InvalidOperation as exc:
        raise ValueError(f"{value!r} is not a decimal amount") from exc
    if not amount.is_finite():
        raise ValueError("amount must be finite")
    quantized = amount.quantize(MONEY_QUANTUM, rounding=ROUNDING)
    if quantized != amount:
        raise ValueError(f"amount {amount} has more than {MONEY_SCALE} decimal places")
    if abs(quantized) > MAX_MONEY:
        raise ValueError(f"amount {amount} is out of range")
    return quantized


def format_money(amount: Decimal) -> str:
    """Plain notation (never an exponent), trailing zeros trimmed to at least two decimals."""
    text = format(amount, "f")
    if "." in text:
        whole, frac = text.split(".")
        frac = frac.rstrip("0").ljust(2, "0")
        text = f"{whole}.{frac}"
    else:
        text = f"{text}.00"
    return text


def truncate_money(amount: Decimal) -> Decimal:
    """A provider amount cut to the columns' scale (never rounded up).

    NOWPayments may send more than eight decimals (18-decimal tokens, or a JavaScript
    double such as 0.012300000000000001). What is stored is cut down; the state machine
    compares the exact values it was sent.
    """
    return to_money(amount.quantize(MONEY_QUANTUM, rounding=ROUND_DOWN))

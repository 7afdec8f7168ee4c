"""The sandbox's currencies: fixed fake rates, minimums, networks and deterministic addresses.

Rates are Decimal prices in US dollars; nothing here ever goes through a float.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_UP, ROUND_UP, Decimal

# Crypto amounts carry 8 decimals, like NOWPayments' pay_amount.
CRYPTO_QUANTUM = Decimal("0.00000001")
FIAT_QUANTUM = Decimal("0.01")
SERVICE_FEE_RATE = Decimal("0.005")

_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BASE32_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"


@dataclass(frozen=True)
class Coin:
    ticker: str
    name: str
    network: str
    usd_rate: Decimal
    min_amount: Decimal
    max_amount: Decimal
    withdrawal_fee: Decimal
    address_style: str
    # XRP, XLM and the like need a memo / destination tag next to the shared address.
    needs_extra_id: bool = False


def _coin(
    ticker: str, name: str, network: str, *numbers: str, style: str, memo: bool = False
) -> Coin:
    usd, minimum, maximum, withdrawal = (Decimal(n) for n in numbers)
    return Coin(ticker, name, network, usd, minimum, maximum, withdrawal, style, memo)


# ticker, name, network, USD rate, min amount, max amount, withdrawal fee
COINS: dict[str, Coin] = {
    coin.ticker: coin
    for coin in (
        _coin("btc", "Bitcoin", "btc", "65000", "0.0001", "50", "0.00002", style="bech32:bc1q"),
        _coin("eth", "Ethereum", "eth", "3200", "0.002", "1000", "0.0005", style="hex"),
        _coin("ltc", "Litecoin", "ltc", "80", "0.05", "20000", "0.001", style="bech32:ltc1q"),
        _coin("usdttrc20", "Tether (TRC-20)", "trx", "1", "1", "1e6", "0.5", style="base58:T"),
        _coin("usdterc20", "Tether (ERC-20)", "eth", "1", "10", "1e6", "2", style="hex"),
        _coin("xrp", "Ripple", "xrp", "0.5", "2", "2e6", "0.1", style="base58:r", memo=True),
        _coin("xlm", "Stellar", "xlm", "0.1", "10", "1e7", "0.01", style="base32:G", memo=True),
        _coin("trx", "Tron", "trx", "0.12", "10", "1e7", "1", style="base58:T"),
        _coin("doge", "Dogecoin", "doge", "0.15", "10", "1e7", "2", style="base58:D"),
    )
}

# Price currencies that are not coins: dollars per unit.
FIAT_USD_RATES: dict[str, Decimal] = {
    "usd": Decimal("1"),
    "eur": Decimal("1.08"),
    "gbp": Decimal("1.27"),
}


def is_known(currency: str) -> bool:
    return currency in COINS or currency in FIAT_USD_RATES


def is_fiat(currency: str) -> bool:
    return currency in FIAT_USD_RATES


def usd_rate(currency: str) -> Decimal:
    coin = COINS.get(currency)
    return coin.usd_rate if coin is not None else FIAT_USD_RATES[currency]


def convert(amount: Decimal, from_currency: str, to_currency: str) -> Decimal:
    """Exact (unrounded) conversion through the dollar rates."""
    if from_currency == to_currency:
        return amount
    return amount * usd_rate(from_currency) / usd_rate(to_currency)


def quantum(currency: str) -> Decimal:
    return FIAT_QUANTUM if is_fiat(currency) else CRYPTO_QUANTUM


def quote_pay_amount(price_amount: Decimal, price_currency: str, pay_currency: str) -> Decimal:
    # Round up: a customer who sends exactly the quoted amount must cover the whole price.
    return convert(price_amount, price_currency, pay_currency).quantize(
        CRYPTO_QUANTUM, rounding=ROUND_UP
    )


def estimate(amount: Decimal, from_currency: str, to_currency: str) -> Decimal:
    return convert(amount, from_currency, to_currency).quantize(
        quantum(to_currency), rounding=ROUND_HALF_UP
    )


def min_amount(currency_from: str, currency_to: str) -> Decimal:
    """Smallest amount of ``currency_from`` that NOWPayments would forward as ``currency_to``."""
    minimum = COINS[currency_from].min_amount
    target = COINS.get(currency_to)
    if target is not None:
        in_from = convert(target.min_amount, currency_to, currency_from).quantize(
            CRYPTO_QUANTUM, rounding=ROUND_UP
        )
        minimum = max(minimum, in_from)
    return minimum


def fees(paid: Decimal, coin: Coin) -> tuple[Decimal, Decimal]:
    """(service fee, withdrawal fee) in the pay currency for a received amount."""
    if paid <= 0:
        return Decimal(0), Decimal(0)
    service = (paid * SERVICE_FEE_RATE).quantize(CRYPTO_QUANTUM, rounding=ROUND_UP)
    return service, coin.withdrawal_fee


def _digest(seed: str) -> bytes:
    return hashlib.sha256(seed.encode("utf-8")).digest() * 2


def _encode(digest: bytes, alphabet: str, length: int) -> str:
    number = int.from_bytes(digest, "big")
    chars = []
    for _ in range(length):
        number, index = divmod(number, len(alphabet))
        chars.append(alphabet[index])
    return "".join(chars)


def fake_address(coin: Coin, seed: str) -> str:
    """A stable address-looking string: the same seed always gives the same address."""
    digest = _digest(f"{coin.ticker}:{seed}")
    style, _, prefix = coin.address_style.partition(":")
    if style == "hex":
        return "0x" + digest.hex()[:40]
    if style == "bech32":
        return prefix + _encode(digest, _BECH32, 38)
    if style == "base32":
        return prefix + _encode(digest, _BASE32_UPPER, 55)
    return prefix + _encode(digest, _BASE58, 33)


def fake_extra_id(coin: Coin, seed: str) -> str | None:
    """A numeric memo / destination tag (fits XRP's 32 bits) for coins that need one."""
    if not coin.needs_extra_id:
        return None
    number = int.from_bytes(_digest(f"memo:{coin.ticker}:{seed}")[:4], "big")
    return str(100_000_000 + number % 3_000_000_000)


def fake_hash(seed: str) -> str:
    return hashlib.sha256(f"tx:{seed}".encode()).hexdigest()


def floor_crypto(amount: Decimal) -> Decimal:
    return amount.quantize(CRYPTO_QUANTUM, rounding=ROUND_DOWN)

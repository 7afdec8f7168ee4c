"""What the order page knows about coins: the merchant's list (cached), QR codes, memos."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from decimal import Decimal

import segno
from markupsafe import Markup, escape

from cryptocheckout.nowpayments.client import NowPaymentsClient
from cryptocheckout.nowpayments.errors import NowPaymentsError

logger = logging.getLogger("cryptocheckout.pages")

# Coins whose wallets read a BIP 21 style URI (`scheme:<address>?amount=<coins>`).
URI_SCHEMES = {
    "btc": "bitcoin",
    "ltc": "litecoin",
    "doge": "dogecoin",
    "bch": "bitcoincash",
}

# Coins sent to a shared address: without the memo or tag the money cannot be matched.
EXTRA_ID_NAMES = {
    "xrp": "destination tag",
    "xlm": "memo",
    "eos": "memo",
    "bnbmainnet": "memo",
    "bnbbsc": "memo",
    "hbar": "memo",
    "atom": "memo",
    "ton": "comment",
}


def extra_id_name(ticker: str | None) -> str:
    return EXTRA_ID_NAMES.get((ticker or "").lower(), "memo")


def payment_uri(ticker: str, address: str, amount: Decimal | None) -> str:
    """What the QR code holds: a payment URI where the coin has one, else the address."""
    scheme = URI_SCHEMES.get(ticker.lower())
    if scheme is None:
        return address
    if amount is None:
        return f"{scheme}:{address}"
    return f"{scheme}:{address}?amount={amount.normalize():f}"


def qr_svg(data: str, label: str) -> Markup:
    """An inline SVG QR code, announced as an image named `label`."""
    svg = segno.make(data, error="m").svg_inline(
        scale=4, border=2, dark="#111827", light="#ffffff", omitsize=True
    )
    return Markup(  # noqa: S704 - segno's own SVG; the label is escaped
        svg.replace("<svg ", f'<svg role="img" aria-label="{escape(label)}" class="qr" ', 1)
    )


@dataclass
class MerchantCoins:
    """`GET /v1/merchant/coins`, asked at most once per `ttl` seconds.

    Every order page shows the list; NOWPayments changes it only when the merchant edits
    their settings. When NOWPayments does not answer, the last list is kept.
    """

    ttl: float = 300.0
    _tickers: tuple[str, ...] = ()
    _fetched_at: float = float("-inf")
    _lock: asyncio.Lock | None = None

    async def get(self, client: NowPaymentsClient) -> tuple[str, ...]:
        if time.monotonic() - self._fetched_at < self.ttl:
            return self._tickers
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if time.monotonic() - self._fetched_at < self.ttl:
                return self._tickers
            try:
                tickers = await client.merchant_coins()
            except NowPaymentsError as exc:
                logger.warning("merchant coins unavailable: %s", type(exc).__name__)
                # Ask again soon rather than on every page view.
                self._fetched_at = time.monotonic() - self.ttl + 15
                return self._tickers
            self._tickers = tuple(dict.fromkeys(t.lower() for t in tickers if t))
            self._fetched_at = time.monotonic()
            return self._tickers

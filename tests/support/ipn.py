"""Building NOWPayments notifications for tests, signed as NOWPayments signs them."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from cryptocheckout.nowpayments.signature import SIGNATURE_HEADER, canonical_ipn_body, sign_ipn


def ipn_payload(
    payment_id: int | str,
    status: str,
    *,
    order_id: str,
    price_amount: Decimal | str,
    pay_amount: Decimal | str,
    actually_paid: Decimal | str | None = None,
    price_currency: str = "usd",
    pay_currency: str = "btc",
    invoice_id: int | None = None,
    parent_payment_id: int | None = None,
    updated_at: int | None = None,
) -> dict[str, Any]:
    """A realistic IPN body: every field of a status answer, numbers as JavaScript sends them."""
    paid = float(actually_paid) if actually_paid is not None else 0
    return {
        "actually_paid": paid,
        "actually_paid_at_fiat": 0,
        "fee": {"currency": pay_currency, "depositFee": 0, "serviceFee": 0, "withdrawalFee": 0},
        "invoice_id": invoice_id,
        "order_description": f"Order {order_id}",
        "order_id": order_id,
        "outcome_amount": paid,
        "outcome_currency": pay_currency,
        "parent_payment_id": parent_payment_id,
        "pay_address": "bc1qtestaddress",
        "pay_amount": float(pay_amount),
        "pay_currency": pay_currency,
        "payin_extra_id": None,
        "payment_extra_ids": None,
        "payment_id": int(payment_id),
        "payment_status": status,
        "price_amount": float(price_amount),
        "price_currency": price_currency,
        "purchase_id": 5500000001,
        "updated_at": updated_at if updated_at is not None else int(time.time() * 1000),
    }


def signed(payload: dict[str, Any], secret: str) -> tuple[bytes, dict[str, str]]:
    body = canonical_ipn_body(payload)
    return body, {SIGNATURE_HEADER: sign_ipn(payload, secret), "Content-Type": "application/json"}

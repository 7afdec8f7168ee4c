"""Payments and invoices as NOWPayments writes them, type quirks included.

The same payment appears in four shapes that disagree on types, and an integration has
to cope with all of them: ``payment_id`` is a string when created and a number elsewhere,
``invoice_id`` a number while the invoice's own ``id`` is a string, ``updated_at`` ISO text
in REST answers and epoch milliseconds in IPNs, and an invoice's ``price_amount`` a string.
``purchase_id`` is a string of digits everywhere, as in the real notifications on record.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from cryptocheckout.sandbox.state import Invoice, Payment
from cryptocheckout.sandbox.wire import epoch_ms, iso, num, plain


def _amount(value: Decimal, as_string: bool) -> int | float | str:
    return plain(value) if as_string else num(value)


def fee_object(payment: Payment) -> dict[str, Any]:
    service, withdrawal = payment.fee_parts()
    return {
        "currency": payment.pay_currency,
        "depositFee": 0,
        "serviceFee": num(service),
        "withdrawalFee": num(withdrawal),
    }


def ipn_payload(payment: Payment, *, amounts_as_strings: bool = False) -> dict[str, Any]:
    """The body of an IPN, with the fields recent real notifications carry."""
    strings = amounts_as_strings
    return {
        "actually_paid": _amount(payment.actually_paid, strings),
        "actually_paid_at_fiat": num(payment.actually_paid_at_fiat()),
        "fee": fee_object(payment),
        "invoice_id": payment.invoice_id,
        "order_description": payment.order_description,
        "order_id": payment.order_id,
        "outcome_amount": num(payment.outcome_amount()),
        "outcome_currency": payment.outcome_currency,
        "parent_payment_id": payment.parent_payment_id,
        "pay_address": payment.pay_address,
        "pay_amount": _amount(payment.pay_amount, strings),
        "pay_currency": payment.pay_currency,
        "payin_extra_id": payment.payin_extra_id,
        "payment_extra_ids": None,
        "payment_id": payment.id,
        "payment_status": str(payment.status),
        "price_amount": _amount(payment.price_amount, strings),
        "price_currency": payment.price_currency,
        "purchase_id": str(payment.purchase_id),
        "updated_at": epoch_ms(payment.updated_at),
    }


def status_view(payment: Payment, *, amounts_as_strings: bool = False) -> dict[str, Any]:
    """``GET /v1/payment/{id}`` and the items of the payment list."""
    strings = amounts_as_strings
    return {
        "payment_id": payment.id,
        "invoice_id": payment.invoice_id,
        "payment_status": str(payment.status),
        "pay_address": payment.pay_address,
        "payin_extra_id": payment.payin_extra_id,
        "price_amount": _amount(payment.price_amount, strings),
        "price_currency": payment.price_currency,
        "pay_amount": _amount(payment.pay_amount, strings),
        "actually_paid": _amount(payment.actually_paid, strings),
        "actually_paid_at_fiat": num(payment.actually_paid_at_fiat()),
        "pay_currency": payment.pay_currency,
        "order_id": payment.order_id,
        "order_description": payment.order_description,
        "purchase_id": str(payment.purchase_id),
        "outcome_amount": num(payment.outcome_amount()),
        "outcome_currency": payment.outcome_currency,
        "payout_hash": payment.payout_hash,
        "payin_hash": payment.payin_hash,
        "created_at": iso(payment.created_at),
        "updated_at": iso(payment.updated_at),
        "burning_percent": None,
        "type": "crypto2crypto",
        "payment_extra_ids": None,
        "parent_payment_id": payment.parent_payment_id,
        "fee": fee_object(payment),
    }


def created_view(payment: Payment, *, amounts_as_strings: bool = False) -> dict[str, Any]:
    """``POST /v1/payment`` and ``POST /v1/invoice-payment`` (201)."""
    strings = amounts_as_strings
    view: dict[str, Any] = {
        "payment_id": str(payment.id),
        "payment_status": str(payment.status),
        "pay_address": payment.pay_address,
        "price_amount": _amount(payment.price_amount, strings),
        "price_currency": payment.price_currency,
        "pay_amount": _amount(payment.pay_amount, strings),
        "amount_received": num(payment.outcome_amount()),
        "pay_currency": payment.pay_currency,
        "order_id": payment.order_id,
        "order_description": payment.order_description,
        "ipn_callback_url": payment.ipn_callback_url,
        "created_at": iso(payment.created_at),
        "updated_at": iso(payment.updated_at),
        "purchase_id": str(payment.purchase_id),
        "smart_contract": None,
        "network": payment.coin.network,
        "network_precision": None,
        "time_limit": None,
        "burning_percent": None,
        "expiration_estimate_date": iso(payment.valid_until),
        "is_fixed_rate": payment.is_fixed_rate,
        "is_fee_paid_by_user": payment.is_fee_paid_by_user,
        "valid_until": iso(payment.valid_until),
        "type": "crypto2crypto",
        "product": "api",
        "origin_type": None,
        "payin_extra_id": payment.payin_extra_id,
    }
    if payment.invoice_id is not None:
        view["invoice_id"] = payment.invoice_id
    return view


def invoice_view(invoice: Invoice, invoice_url: str) -> dict[str, Any]:
    """``POST /v1/invoice``: the id and the price as strings."""
    return {
        "id": str(invoice.id),
        "token_id": invoice.token_id,
        "order_id": invoice.order_id,
        "order_description": invoice.order_description,
        "price_amount": plain(invoice.price_amount),
        "price_currency": invoice.price_currency,
        "pay_currency": invoice.pay_currency,
        "ipn_callback_url": invoice.ipn_callback_url,
        "invoice_url": invoice_url,
        "success_url": invoice.success_url,
        "cancel_url": invoice.cancel_url,
        "partially_paid_url": invoice.partially_paid_url,
        "payout_currency": None,
        "customer_email": None,
        "is_fixed_rate": invoice.is_fixed_rate,
        "is_fee_paid_by_user": invoice.is_fee_paid_by_user,
        "created_at": iso(invoice.created_at),
        "updated_at": iso(invoice.updated_at),
    }

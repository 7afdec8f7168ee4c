"""NOWPayments' merchant API under ``/v1``: real paths, field names, status codes and errors."""

from __future__ import annotations

import asyncio
import hmac
import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from cryptocheckout.sandbox import coins
from cryptocheckout.sandbox.auth import require_api_key
from cryptocheckout.sandbox.runtime import SandboxRuntime, runtime
from cryptocheckout.sandbox.simulation import CASES, NewPayment
from cryptocheckout.sandbox.state import Fault, Invoice, Payment, utcnow
from cryptocheckout.sandbox.views import (
    created_view,
    invoice_view,
    status_view,
)
from cryptocheckout.sandbox.wire import (
    ApiError,
    ErrorCode,
    JsResponse,
    amount,
    invalid,
    json_body,
    num,
    opt_amount,
    opt_bool,
    opt_id_text,
    opt_text,
    opt_url,
    req_amount,
    req_text,
)


class InjectedFault(Exception):
    """Raised by the fault dependency; the app answers with its prepared response."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


_FAULT_CODES = {
    429: (ErrorCode.TOO_MANY_REQUESTS, "Too many requests"),
    500: (ErrorCode.INTERNAL_ERROR, "Internal server error"),
    503: (ErrorCode.SERVICE_UNAVAILABLE, "Service temporarily unavailable"),
}


def fault_response(fault: Fault) -> Response:
    headers = {"retry-after": fault.retry_after} if fault.retry_after else {}
    status = fault.status or 500
    if fault.html:
        # What a CDN in front of the API answers: a page, not the API's JSON.
        page = f"<html><head><title>{status}</title></head><body><h1>{status}</h1></body></html>"
        return HTMLResponse(page, status_code=status, headers=headers)
    code, message = _FAULT_CODES.get(status, (f"HTTP_{status}", "Injected fault"))
    error = ApiError(status, code, message, headers)
    return JsResponse(error.body(), status_code=status, headers=headers)


async def apply_faults(request: Request) -> None:
    """Injected faults act before anything else, as a rate limiter or CDN would."""
    route = request.scope.get("route")
    template = getattr(route, "path", None)
    fault = runtime(request).store.take_fault(request.method, request.url.path, template)
    if fault is None:
        return
    if fault.delay > 0:
        await asyncio.sleep(fault.delay)
    if fault.status is not None:
        raise InjectedFault(fault_response(fault))


async def api_key(request: Request) -> None:
    require_api_key(request, runtime(request).config.api_key)


router = APIRouter(prefix="/v1", dependencies=[Depends(apply_faults)])
merchant = [Depends(api_key)]


# -- query parameters ----------------------------------------------------------------------


def _query(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return value if value not in (None, "") else None


def _currency(value: object, name: str, *, coins_only: bool = False) -> str:
    if value is None or value == "":
        raise invalid(f'"{name}" is required')
    if not isinstance(value, str):
        raise invalid(f'"{name}" must be a string')
    ticker = value.strip().lower()
    known = ticker in coins.COINS if coins_only else coins.is_known(ticker)
    if not known:
        raise invalid(f"Currency {value} was not found")
    return ticker


def _opt_currency(value: object, name: str, *, coins_only: bool = False) -> str | None:
    if value is None:
        return None
    return _currency(value, name, coins_only=coins_only)


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = _query(request, name)
    if text is None:
        return default
    if not text.strip().isdigit():
        raise invalid(f'"{name}" must be a number')
    value = int(text)
    if not low <= value <= high:
        raise invalid(f'"{name}" must be between {low} and {high}')
    return value


def _bool_param(request: Request, name: str) -> bool:
    text = _query(request, name)
    if text is None:
        return False
    if text.lower() not in ("true", "false", "1", "0"):
        raise invalid(f'"{name}" must be a boolean')
    return text.lower() in ("true", "1")


def _date_param(request: Request, name: str, *, end_of_day: bool) -> datetime | None:
    text = _query(request, name)
    if text is None:
        return None
    try:
        if len(text) == 10:
            day = datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
            return day + timedelta(days=1) - timedelta(microseconds=1) if end_of_day else day
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f'"{name}" must be a valid date') from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _payment_id(text: str) -> int:
    if not text.isdigit() or len(text) > 18:
        raise invalid('"payment_id" must be a number')
    return int(text)


def _ensure_minimum(pay_amount: Decimal, pay_currency: str, outcome_currency: str) -> None:
    if pay_amount < coins.min_amount(pay_currency, outcome_currency):
        raise ApiError(400, ErrorCode.AMOUNT_MINIMAL_ERROR, "amountTo is too small")


def _created(rt: SandboxRuntime, payment: Payment) -> JsResponse:
    strings = rt.store.settings.amounts_as_strings
    return JsResponse(created_view(payment, amounts_as_strings=strings), status_code=201)


# -- endpoints -----------------------------------------------------------------------------


@router.get("/status")
async def api_status() -> JsResponse:
    return JsResponse({"message": "OK"})


@router.post("/auth")
async def api_auth(request: Request) -> JsResponse:
    rt = runtime(request)
    body = await json_body(request)
    email = req_text(body, "email")
    password = req_text(body, "password")
    if rt.config.email or rt.config.password:
        email_ok = hmac.compare_digest(email.encode(), rt.config.email.encode())
        password_ok = hmac.compare_digest(password.encode(), rt.config.password.encode())
        if not (email_ok and password_ok):
            raise ApiError(401, "INVALID_CREDENTIALS", "Invalid email or password")
    return JsResponse({"token": rt.jwt.issue(email, rt.store.settings.jwt_ttl)})


@router.get("/currencies", dependencies=merchant)
async def api_currencies(request: Request) -> JsResponse:
    if _bool_param(request, "fixed_rate"):
        items = [
            {"currency": c.ticker, "min_amount": num(c.min_amount), "max_amount": num(c.max_amount)}
            for c in coins.COINS.values()
        ]
        return JsResponse({"currencies": items})
    return JsResponse({"currencies": list(coins.COINS)})


@router.get("/merchant/coins", dependencies=merchant)
async def api_merchant_coins() -> JsResponse:
    # The documentation names the list "currencies"; answers have also been seen with
    # "selectedCurrencies" in upper case. Both are given so either reading works.
    tickers = list(coins.COINS)
    return JsResponse({"currencies": tickers, "selectedCurrencies": [t.upper() for t in tickers]})


@router.get("/min-amount", dependencies=merchant)
async def api_min_amount(request: Request) -> JsResponse:
    currency_from = _currency(_query(request, "currency_from"), "currency_from", coins_only=True)
    to_text = _query(request, "currency_to") or currency_from
    currency_to = _currency(to_text, "currency_to")
    minimum = coins.min_amount(currency_from, currency_to)
    answer: dict[str, Any] = {
        "currency_from": currency_from,
        "currency_to": currency_to,
        "min_amount": num(minimum),
    }
    fiat_text = _query(request, "fiat_equivalent")
    if fiat_text is not None:
        fiat = _currency(fiat_text, "fiat_equivalent")
        answer["fiat_equivalent"] = num(coins.estimate(minimum, currency_from, fiat))
    return JsResponse(answer)


@router.get("/estimate", dependencies=merchant)
async def api_estimate(request: Request) -> JsResponse:
    if _query(request, "amount") is None:
        raise invalid('"amount" is required')
    value = amount(_query(request, "amount"), "amount")
    currency_from = _currency(_query(request, "currency_from"), "currency_from")
    currency_to = _currency(_query(request, "currency_to"), "currency_to")
    return JsResponse(
        {
            "currency_from": currency_from,
            "amount_from": num(value),
            "currency_to": currency_to,
            "estimated_amount": num(coins.estimate(value, currency_from, currency_to)),
        }
    )


@router.post("/invoice", dependencies=merchant)
async def api_create_invoice(request: Request) -> JsResponse:
    rt = runtime(request)
    body = await json_body(request)
    price_amount = req_amount(body, "price_amount")
    price_currency = _currency(body.get("price_currency"), "price_currency")
    pay_currency = _opt_currency(body.get("pay_currency"), "pay_currency", coins_only=True)
    if pay_currency is not None:
        quoted = coins.quote_pay_amount(price_amount, price_currency, pay_currency)
        _ensure_minimum(quoted, pay_currency, pay_currency)
    now = utcnow()
    invoice = Invoice(
        id=rt.store.new_id(),
        token_id=rt.store.new_token(),
        price_amount=price_amount,
        price_currency=price_currency,
        pay_currency=pay_currency,
        order_id=opt_id_text(body, "order_id"),
        order_description=opt_text(body, "order_description"),
        ipn_callback_url=opt_url(body, "ipn_callback_url"),
        success_url=opt_url(body, "success_url"),
        cancel_url=opt_url(body, "cancel_url"),
        partially_paid_url=opt_url(body, "partially_paid_url"),
        is_fixed_rate=bool(opt_bool(body, "is_fixed_rate")),
        is_fee_paid_by_user=bool(opt_bool(body, "is_fee_paid_by_user")),
        created_at=now,
        updated_at=now,
    )
    rt.store.add_invoice(invoice)
    return JsResponse(invoice_view(invoice, rt.invoice_url(invoice)))


def _case(body: dict[str, Any]) -> str | None:
    case = opt_text(body, "case")
    if case is not None and case not in CASES:
        raise invalid(f'"case" must be one of [{", ".join(CASES)}]')
    return case


def _purchase(rt: SandboxRuntime, body: dict[str, Any]) -> int | None:
    text = opt_id_text(body, "purchase_id")
    if text is None:
        return None
    if not text.isdigit() or not rt.store.payments_of_purchase(int(text)):
        raise invalid("purchase_id is invalid or was not found")
    return int(text)


@router.post("/payment", dependencies=merchant)
async def api_create_payment(request: Request) -> JsResponse:
    rt = runtime(request)
    body = await json_body(request)
    price_amount = req_amount(body, "price_amount")
    price_currency = _currency(body.get("price_currency"), "price_currency")
    pay_currency = _currency(body.get("pay_currency"), "pay_currency", coins_only=True)
    outcome = _opt_currency(body.get("payout_currency"), "payout_currency", coins_only=True)
    pay_amount = opt_amount(body, "pay_amount")
    new = NewPayment(
        price_amount=price_amount,
        price_currency=price_currency,
        pay_currency=pay_currency,
        pay_amount=pay_amount,
        order_id=opt_id_text(body, "order_id"),
        order_description=opt_text(body, "order_description"),
        ipn_callback_url=opt_url(body, "ipn_callback_url"),
        purchase_id=_purchase(rt, body),
        outcome_currency=outcome,
        is_fixed_rate=bool(opt_bool(body, "is_fixed_rate")),
        is_fee_paid_by_user=bool(opt_bool(body, "is_fee_paid_by_user")),
        case=_case(body),
    )
    quoted = pay_amount or coins.quote_pay_amount(price_amount, price_currency, pay_currency)
    _ensure_minimum(quoted, pay_currency, outcome or pay_currency)
    return _created(rt, rt.simulation.create_payment(new))


def invoice_payment_request(
    rt: SandboxRuntime,
    invoice: Invoice,
    pay_currency: str,
    *,
    case: str | None = None,
    order_description: str | None = None,
    purchase_id: int | None = None,
) -> NewPayment:
    """The payment an invoice gets when its customer picks a coin; checks the minimum."""
    quoted = coins.quote_pay_amount(invoice.price_amount, invoice.price_currency, pay_currency)
    _ensure_minimum(quoted, pay_currency, pay_currency)
    return NewPayment(
        price_amount=invoice.price_amount,
        price_currency=invoice.price_currency,
        pay_currency=pay_currency,
        order_id=invoice.order_id,
        order_description=order_description or invoice.order_description,
        ipn_callback_url=invoice.ipn_callback_url,
        purchase_id=purchase_id,
        is_fixed_rate=invoice.is_fixed_rate,
        is_fee_paid_by_user=invoice.is_fee_paid_by_user,
        case=case,
        invoice=invoice,
    )


def find_invoice(rt: SandboxRuntime, value: object) -> Invoice:
    text = str(value).strip() if isinstance(value, str | int) else None
    invoice = rt.store.invoices.get(int(text)) if text and text.isdigit() else None
    if invoice is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, "Invoice not found")
    return invoice


@router.post("/invoice-payment", dependencies=merchant)
async def api_create_invoice_payment(request: Request) -> JsResponse:
    rt = runtime(request)
    body = await json_body(request)
    if body.get("iid") is None:
        raise invalid('"iid" is required')
    invoice = find_invoice(rt, opt_id_text(body, "iid"))
    chosen = _opt_currency(body.get("pay_currency"), "pay_currency", coins_only=True)
    pay_currency = chosen or invoice.pay_currency
    if pay_currency is None:
        raise invalid('"pay_currency" is required')
    new = invoice_payment_request(
        rt,
        invoice,
        pay_currency,
        case=_case(body),
        order_description=opt_text(body, "order_description"),
        purchase_id=_purchase(rt, body),
    )
    return _created(rt, rt.simulation.create_payment(new))


@router.get("/payment/{payment_id}", dependencies=merchant)
async def api_payment_status(request: Request, payment_id: str) -> JsResponse:
    rt = runtime(request)
    if rt.store.settings.status_requires_jwt:
        rt.jwt.require(request)
    with rt.store.lock:
        payment = rt.store.payments.get(_payment_id(payment_id))
        if payment is None:
            raise ApiError(404, ErrorCode.NOT_FOUND, "Payment not found")
        view = status_view(payment, amounts_as_strings=rt.store.settings.amounts_as_strings)
    return JsResponse(view)


_SORT_KEYS: dict[str, Callable[[Payment], Any]] = {
    "created_at": lambda p: p.created_at,
    "updated_at": lambda p: p.updated_at,
    "payment_id": lambda p: p.id,
    "payment_status": lambda p: str(p.status),
    "pay_address": lambda p: p.pay_address,
    "price_amount": lambda p: p.price_amount,
    "price_currency": lambda p: p.price_currency,
    "pay_amount": lambda p: p.pay_amount,
    "actually_paid": lambda p: p.actually_paid,
    "pay_currency": lambda p: p.pay_currency,
    "order_id": lambda p: p.order_id or "",
    "order_description": lambda p: p.order_description or "",
    "purchase_id": lambda p: p.purchase_id,
    "outcome_amount": lambda p: p.outcome_amount(),
    "outcome_currency": lambda p: p.outcome_currency,
}


@router.get("/payment/", dependencies=merchant)
@router.get("/payment", dependencies=merchant, include_in_schema=False)
async def api_list_payments(request: Request) -> JsResponse:
    rt = runtime(request)
    rt.jwt.require(request)
    limit = _int_param(request, "limit", 10, 1, 500)
    page = _int_param(request, "page", 0, 0, 10**9)
    sort_by = _query(request, "sortBy") or "created_at"
    if sort_by not in _SORT_KEYS:
        raise invalid(f'"sortBy" must be one of [{", ".join(_SORT_KEYS)}]')
    order_by = (_query(request, "orderBy") or "asc").lower()
    if order_by not in ("asc", "desc"):
        raise invalid('"orderBy" must be one of [asc, desc]')
    date_from = _date_param(request, "dateFrom", end_of_day=False)
    date_to = _date_param(request, "dateTo", end_of_day=True)
    invoice_text = _query(request, "invoiceId")
    if invoice_text is not None and not invoice_text.isdigit():
        raise invalid('"invoiceId" must be a number')
    with rt.store.lock:
        payments = [
            p
            for p in rt.store.payments.values()
            if (invoice_text is None or p.invoice_id == int(invoice_text))
            and (date_from is None or p.created_at >= date_from)
            and (date_to is None or p.created_at <= date_to)
        ]
        payments.sort(key=_SORT_KEYS[sort_by], reverse=order_by == "desc")
        total = len(payments)
        chosen = payments[page * limit : (page + 1) * limit]
        strings = rt.store.settings.amounts_as_strings
        data = [status_view(p, amounts_as_strings=strings) for p in chosen]
    return JsResponse(
        {
            "data": data,
            "limit": limit,
            "page": page,
            "pagesCount": math.ceil(total / limit),
            "total": total,
        }
    )

"""The customer pages: `GET /`, `POST /checkout`, the order page and its status poll.

Thin handlers: orders and payments are made by their services, whose named errors are shown
beside the form fields they name. Every page carries the headers of `security.py`.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import Scope

from cryptocheckout.catalogue import repository as catalogue
from cryptocheckout.config import Settings
from cryptocheckout.customer.views import delivery_url
from cryptocheckout.delivery.wiring import delivery_links
from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.db import unit_of_work
from cryptocheckout.kit.errors import DomainError, FieldIssue, OrderClosed, ProviderRefused
from cryptocheckout.orders import service as orders
from cryptocheckout.orders.models import Order
from cryptocheckout.orders.schemas import OrderCreate
from cryptocheckout.pages import coins, queries
from cryptocheckout.pages.security import (
    CSRF_FIELD,
    Csrf,
    order_cookie_name,
    page_headers,
    set_order_cookie,
)
from cryptocheckout.pages.views import (
    FINAL_KINDS,
    Kind,
    badge,
    balance,
    coins_amount,
    money,
    shop_payments,
    state_key,
    state_kind,
    time_left,
)
from cryptocheckout.payments import service as payments
from cryptocheckout.payments.models import Payment, PaymentKind

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["money"] = money
templates.env.filters["coins"] = coins_amount

router = APIRouter(include_in_schema=False)

INVOICE_CHOICE = "nowpayments"
MAX_QUANTITY = 100
# States that offer coins; the others need no call to NOWPayments' coin list.
PAYABLE = frozenset({Kind.CHOOSE, Kind.PAYING, Kind.INVOICE, Kind.RETRY, Kind.UNDERPAID})
# States that change without the person doing anything: pages without script refresh.
WAITING = frozenset({Kind.PAYING, Kind.INVOICE, Kind.CONFIRMING, Kind.PAID})


class Static(StaticFiles):
    """The pages' stylesheet and script, with the same nosniff as every response."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers.setdefault("Cache-Control", "no-cache")
        return response


static_files = Static(directory=HERE / "static")


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _sessionmaker(request: Request) -> async_sessionmaker[AsyncSession]:
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    return sessionmaker


def _merchant_coins(request: Request) -> coins.MerchantCoins:
    state = request.app.state
    if not hasattr(state, "merchant_coins"):
        state.merchant_coins = coins.MerchantCoins()
    cache: coins.MerchantCoins = state.merchant_coins
    return cache


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (first value of each); the body limit applies before."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = (await request.body()).decode("utf-8", "replace")
    fields: dict[str, str] = {}
    for name, value in parse_qsl(body, keep_blank_values=True, max_num_fields=200):
        fields.setdefault(name, value)
    return fields


def _render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    private: bool = False,
    csrf: Csrf | None = None,
) -> HTMLResponse:
    settings = _settings(request)
    context = {
        "shop_name": settings.shop_name,
        "support_email": settings.support_email,
        "csrf_field": CSRF_FIELD,
        "csrf_token": csrf.token() if csrf is not None else "",
        **context,
    }
    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    if csrf is not None:
        csrf.set_cookie(response)
    page_headers(response, settings, private=private)
    return response


def _not_found(request: Request) -> HTMLResponse:
    return _render(request, "not_found.html", {"title": "Order not found"}, status_code=404)


def _see_other(request: Request, url: str, *, private: bool = True) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    page_headers(response, _settings(request), private=private)
    return response


# -- the storefront -------------------------------------------------------------------------


async def _shop(
    request: Request,
    csrf: Csrf,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    async with unit_of_work(_sessionmaker(request)) as session:
        products = await catalogue.list_active(session)
        stock = await catalogue.stock(session, (p.id for p in products))
    return _render(
        request,
        "shop.html",
        {
            "title": None,
            "products": products,
            "stock": stock,
            "values": values or {},
            "errors": errors or {},
        },
        status_code=status_code,
        csrf=csrf,
    )


@router.get("/", response_class=HTMLResponse)
async def shop(request: Request) -> HTMLResponse:
    return await _shop(request, Csrf(request, _settings(request)))


def _field_name(loc: tuple[str | int, ...], item_fields: list[str]) -> str:
    """Which form field a service's or a schema's error belongs to."""
    if loc[:1] == ("email",):
        return "email"
    index = loc[1] if len(loc) >= 2 and loc[0] == "items" else None
    if isinstance(index, int) and 0 <= index < len(item_fields):
        return item_fields[index]
    return "items"


def _friendly(field: str, issue: FieldIssue) -> str:
    """The service's message in the customer's words (no SKUs, no schema jargon)."""
    if field == "email":
        return "Enter your e-mail address, like name@example.com: your keys are sent there."
    if issue.code == "out_of_stock":
        left = re.match(r"only (\d+)", issue.message)
        return f"Only {left.group(1)} left in stock." if left else "Not enough in stock."
    if issue.code in ("unknown_product", "inactive_product"):
        return "This product is no longer for sale."
    return issue.message[:1].upper() + issue.message[1:]


@router.post("/checkout", response_class=HTMLResponse)
async def checkout(request: Request) -> Response:
    settings = _settings(request)
    csrf = Csrf(request, settings)
    form = await _form(request)
    values = {name: value for name, value in form.items() if name != CSRF_FIELD}
    if not csrf.valid(form.get(CSRF_FIELD)):
        return await _shop(
            request,
            csrf,
            values=values,
            errors={"form": "This form had expired. Check your order and press Checkout again."},
            status_code=403,
        )
    async with unit_of_work(_sessionmaker(request)) as session:
        products = await catalogue.list_active(session)

    errors: dict[str, str] = {}
    items: list[dict[str, Any]] = []
    item_fields: list[str] = []
    for product in products:
        field = f"qty-{product.id}"
        text = form.get(field, "0").strip() or "0"
        if not (text.isascii() and text.isdigit() and len(text) <= 3) or int(text) > MAX_QUANTITY:
            errors[field] = f"Enter a whole number from 0 to {MAX_QUANTITY}."
            continue
        if int(text) > 0:
            items.append({"product_id": str(product.id), "quantity": int(text)})
            item_fields.append(field)
    email = form.get("email", "").strip()
    issues: list[FieldIssue] = []
    data: OrderCreate | None = None
    try:
        data = OrderCreate.model_validate({"email": email, "items": items})
    except ValidationError as exc:
        for error in exc.errors():
            issues.append(FieldIssue(tuple(error["loc"]), error["msg"], error["type"]))
    if data is not None and not errors:
        try:
            async with unit_of_work(_sessionmaker(request)) as session:
                order = await orders.create_order(
                    session, data, hold_until=settings.stock_hold_until()
                )
                await session.commit()
        except DomainError as exc:
            issues.extend(exc.fields or [FieldIssue(("items",), exc.detail)])
        else:
            response = _see_other(request, f"/orders/{order.id}")
            set_order_cookie(response, settings, order.id, order.access_token)
            return response
    for issue in issues:
        field = _field_name(issue.loc, item_fields)
        if field == "items" and not items:
            errors.setdefault("items", "Choose at least one product: set its quantity above 0.")
        else:
            errors.setdefault(field, _friendly(field, issue))
    return await _shop(request, csrf, values=values, errors=errors, status_code=422)


# -- the order page -------------------------------------------------------------------------


def _parse_id(order_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(order_id)
    except ValueError:
        return None


async def _customer_order(
    request: Request, session: AsyncSession, order_id: uuid.UUID
) -> tuple[Order, str] | None:
    token = request.cookies.get(order_cookie_name(order_id))
    order = await orders.get_for_customer(session, str(order_id), token)
    if order is None or token is None:
        return None
    return order, token


def _time_left(expires_at: datetime | None) -> int | None:
    if expires_at is None:
        return None
    return max(int((expires_at - utcnow()).total_seconds()), 0)


def _payment_view(settings: Settings, payment: Payment) -> dict[str, Any]:
    ticker = (payment.pay_currency or "").lower()
    view: dict[str, Any] = {
        "row": payment,
        "ticker": ticker.upper(),
        "amount": coins_amount(payment.pay_amount),
        "extra_id_name": coins.extra_id_name(ticker),
        "expires_at": payment.expires_at,
        "seconds_left": _time_left(payment.expires_at),
        "time_left": time_left(_time_left(payment.expires_at)),
        "qr": None,
        "sandbox_url": None,
    }
    if payment.pay_address:
        uri = coins.payment_uri(ticker, payment.pay_address, payment.pay_amount)
        view["qr"] = coins.qr_svg(uri, f"QR code for paying {view['amount']} {view['ticker']}")
        view["uri"] = uri
    if settings.sandbox_pay_pages and payment.kind is PaymentKind.PAYMENT and payment.external_id:
        view["sandbox_url"] = f"{settings.nowpayments_base}/sandbox/pay/{payment.external_id}"
    return view


async def _order_page(
    request: Request,
    order: Order,
    session: AsyncSession,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    settings = _settings(request)
    all_payments = await queries.payments_of(session, order.id)
    mine = shop_payments(all_payments)
    latest = mine[0] if mine else None
    kind = state_kind(
        order.status,
        latest.status if latest else None,
        latest.kind if latest else None,
    )
    key = state_key(
        kind,
        order.status,
        latest.id if latest else None,
        latest.status if latest else None,
        latest.confirmations if latest else 0,
    )
    merchant: tuple[str, ...] = ()
    if kind in PAYABLE:
        merchant = await _merchant_coins(request).get(request.app.state.nowpayments)
    csrf = Csrf(request, settings)
    context = {
        "title": f"Order {str(order.id)[:8]}",
        "order": order,
        "badge": badge(kind, order.status),
        "kind": kind.value,
        "state_key": key,
        "final": kind in FINAL_KINDS,
        "waiting": kind in WAITING,
        "coins": [t.upper() for t in merchant],
        "payment": _payment_view(settings, latest) if latest else None,
        "balance": balance(order, all_payments),
        "retry_choice": _retry_choice(latest),
        "delivery_url": delivery_url(order, delivery_links(settings, request.app.state.keyring)),
        "error": error,
        "invoice_choice": INVOICE_CHOICE,
    }
    return _render(request, "order.html", context, status_code=status_code, private=True, csrf=csrf)


def _retry_choice(payment: Payment | None) -> str:
    """`Try again` and `Pay the remaining` repeat the last way of paying."""
    if payment is None or payment.kind is PaymentKind.INVOICE or not payment.pay_currency:
        return INVOICE_CHOICE
    return payment.pay_currency.lower()


@router.get("/orders/{order_id}", response_class=HTMLResponse)
async def order_page(request: Request, order_id: str) -> Response:
    parsed = _parse_id(order_id)
    if parsed is None:
        return _not_found(request)
    token = request.query_params.get("token")
    async with unit_of_work(_sessionmaker(request)) as session:
        if token is not None:
            # A link from an e-mail or the API: the token becomes this order's cookie and
            # leaves the address bar (and the history, and any Referer).
            order = await orders.get_for_customer(session, str(parsed), token[:200])
            if order is None:
                return _not_found(request)
            response = _see_other(request, f"/orders/{order.id}")
            set_order_cookie(response, _settings(request), order.id, order.access_token)
            return response
        found = await _customer_order(request, session, parsed)
        if found is None:
            return _not_found(request)
        return await _order_page(request, found[0], session)


@router.post("/orders/{order_id}/pay", response_class=HTMLResponse)
async def pay(request: Request, order_id: str) -> Response:
    """Opens a payment in the chosen coin, or an invoice; switches from an untouched one."""
    settings = _settings(request)
    parsed = _parse_id(order_id)
    if parsed is None:
        return _not_found(request)
    form = await _form(request)
    sessionmaker = _sessionmaker(request)
    async with unit_of_work(sessionmaker) as session:
        found = await _customer_order(request, session, parsed)
        if found is None:
            return _not_found(request)
        order, token = found
        if not Csrf(request, settings).valid(form.get(CSRF_FIELD)):
            return await _order_page(
                request,
                order,
                session,
                error="This page had been open too long. Please choose again.",
                status_code=403,
            )
        choice = form.get("coin", "").strip().lower()
        merchant = await _merchant_coins(request).get(request.app.state.nowpayments)
        if choice != INVOICE_CHOICE and choice not in merchant:
            return await _order_page(
                request, order, session, error="Choose one of the coins below.", status_code=422
            )
    pay_currency = None if choice == INVOICE_CHOICE else choice
    async with unit_of_work(sessionmaker) as session:
        latest = shop_payments(await queries.payments_of(session, parsed))
    current = latest[0] if latest else None
    if current is not None and _differs(current, pay_currency):
        await payments.abandon_unpaid(sessionmaker, order_id=parsed, token=token)
    try:
        created = await payments.create_payment(
            sessionmaker,
            request.app.state.nowpayments,
            settings,
            order_id=str(parsed),
            token=token,
            pay_currency=pay_currency,
        )
    except OrderClosed:
        return _see_other(request, f"/orders/{parsed}")
    except ProviderRefused as exc:
        async with unit_of_work(sessionmaker) as session:
            again = await orders.get_for_customer(session, str(parsed), token)
            if again is None:  # pragma: no cover - deleted meanwhile
                return _not_found(request)
            return await _order_page(
                request,
                again,
                session,
                error=(
                    f"NOWPayments could not open this payment ({exc.provider_code}). "
                    "Try another coin, or again in a minute."
                ),
                status_code=502,
            )
    payment = created.payment
    if payment.kind is PaymentKind.INVOICE and payment.payment_url:
        return _see_other(request, payment.payment_url)
    return _see_other(request, f"/orders/{parsed}")


def _differs(payment: Payment, pay_currency: str | None) -> bool:
    if pay_currency is None:
        return payment.kind is not PaymentKind.INVOICE
    return payment.kind is PaymentKind.INVOICE or (payment.pay_currency or "") != pay_currency

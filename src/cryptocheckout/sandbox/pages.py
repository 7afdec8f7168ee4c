"""The sandbox's pages, as plain offline HTML: the hosted invoice page (``/payment/?iid=...``),
the page of a direct payment (``/sandbox/pay/{payment_id}``) and a small index.

On the real invoice page a customer picks a coin and sends it; here the customer picks a
coin, sees the address, memo and exact amount, and then chooses what the "blockchain" does.
Showing the quote creates nothing (GET is safe); the choice creates the invoice's payment
as ``POST /v1/invoice-payment`` would and walks it through its statuses.

A direct payment (``POST /v1/payment``) has no hosted page at NOWPayments: the shop shows
the address itself. The sandbox's page for it stands for the customer's wallet: it shows
what the shop should be showing, and its buttons decide what arrives.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jinja2
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from cryptocheckout.sandbox import coins
from cryptocheckout.sandbox.control import start_invoice_payment
from cryptocheckout.sandbox.runtime import SandboxRuntime, runtime
from cryptocheckout.sandbox.simulation import (
    OVERPAID_SHARE,
    PARTIAL_SHARE,
    Outcome,
    address_seed,
    paid_amount,
)
from cryptocheckout.sandbox.state import Invoice, Payment, Status
from cryptocheckout.sandbox.wire import ApiError, amount, is_http_url, iso, plain

router = APIRouter(include_in_schema=False)

_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)

MAX_FORM_BYTES = 16 * 1024


def render(template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.setdefault("refresh", None)
    html = _templates.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code)


def message_page(status_code: int, title: str, message: str, back: str | None = None) -> Response:
    return render("message.html", status_code, title=title, message=message, back=back)


def _money(value: Decimal, currency: str) -> str:
    return f"{plain(value)} {currency.upper()}"


def _invoice_context(invoice: Invoice) -> dict[str, Any]:
    return {
        "id": invoice.id,
        "order_id": invoice.order_id,
        "order_description": invoice.order_description,
        "pay_currency": invoice.pay_currency,
        "cancel_url": invoice.cancel_url if is_http_url(invoice.cancel_url) else None,
    }


def _quote(invoice: Invoice, coin: coins.Coin) -> dict[str, Any]:
    quoted = coins.quote_pay_amount(invoice.price_amount, invoice.price_currency, coin.ticker)
    # The same seed the payment will use, so the address shown is the one it gets.
    seed = address_seed(invoice.id, 0, coin.ticker)
    minimum = coins.min_amount(coin.ticker, coin.ticker)
    return {
        "amount": plain(quoted),
        "address": coins.fake_address(coin, seed),
        "extra_id": coins.fake_extra_id(coin, seed),
        "too_small": quoted < minimum,
        "minimum": plain(minimum),
    }


def _coin_context(coin: coins.Coin) -> dict[str, Any]:
    return {
        "ticker": coin.ticker,
        "ticker_upper": coin.ticker.upper(),
        "name": coin.name,
        "network": coin.network,
    }


def _links(invoice: Invoice, payment: Payment) -> list[dict[str, str]]:
    """Where the real page sends the customer back to, for the payment's status."""
    if payment.status == Status.FINISHED:
        url = invoice.success_url
    elif payment.status == Status.PARTIALLY_PAID:
        url = invoice.partially_paid_url or invoice.cancel_url
    else:
        url = invoice.cancel_url
    return [{"label": "Return to the shop", "url": url}] if url and is_http_url(url) else []


def _payment_context(payment: Payment) -> dict[str, Any]:
    return {
        "id": payment.id,
        "status": str(payment.status),
        "pay_amount": plain(payment.pay_amount),
        "actually_paid": plain(payment.actually_paid),
        "pay_currency_upper": payment.pay_currency.upper(),
        "pay_address": payment.pay_address,
        "payin_extra_id": payment.payin_extra_id,
        "history": [
            {"status": str(s), "at": iso(at), "when": _when(at)} for s, at in payment.history
        ],
    }


def _when(moment: datetime) -> str:
    """A time as a person reads it (the ISO form goes in the ``datetime`` attribute)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _notifications_context(rt: SandboxRuntime, payment: Payment) -> list[dict[str, Any]]:
    items = []
    for n in rt.store.notifications:
        if n.payment_id != payment.id:
            continue
        answers = ", ".join(
            str(a.status_code) if a.status_code is not None else "no answer" for a in n.attempts
        )
        items.append(
            {
                "id": n.id,
                "payment_status": str(n.payment_status),
                "state": str(n.state),
                "answers": answers,
            }
        )
    return items


@router.get("/")
async def index(request: Request) -> Response:
    rt = runtime(request)
    with rt.store.lock:
        invoices = [
            {
                "id": i.id,
                "order_id": i.order_id,
                "price": _money(i.price_amount, i.price_currency),
                "payments": len(i.payment_ids),
            }
            for i in reversed(rt.store.invoices.values())
        ]
        counts: dict[int, int] = {}
        for n in rt.store.notifications:
            counts[n.payment_id] = counts.get(n.payment_id, 0) + 1
        payments = [
            {
                "id": p.id,
                "invoice_id": p.invoice_id,
                "parent_payment_id": p.parent_payment_id,
                "status": str(p.status),
                "actually_paid": plain(p.actually_paid),
                "pay_amount": plain(p.pay_amount),
                "pay_currency": p.pay_currency.upper(),
                "order_id": p.order_id,
                "notifications": counts.get(p.id, 0),
            }
            for p in reversed(rt.store.payments.values())
        ]
    return render("index.html", invoices=invoices, payments=payments)


def _find_invoice(rt: SandboxRuntime, iid: str | None) -> Invoice | None:
    if not iid or not iid.strip().isdigit():
        return None
    return rt.store.invoices.get(int(iid.strip()))


@router.get("/payment/")
@router.get("/payment")
async def invoice_page(request: Request) -> Response:
    rt = runtime(request)
    params = request.query_params
    invoice = _find_invoice(rt, params.get("iid"))
    if invoice is None:
        return message_page(404, "Invoice not found", "There is no invoice with this id.")
    with rt.store.lock:
        context: dict[str, Any] = {
            "invoice": _invoice_context(invoice),
            "price": _money(invoice.price_amount, invoice.price_currency),
            "payment": None,
            "coin": None,
        }
        payment = _selected_payment(rt, invoice, params.get("payment_id"), params.get("new"))
        if payment is not None:
            in_progress = rt.simulation.is_walking(payment.id) or any(
                not n.state.settled for n in rt.store.notifications if n.payment_id == payment.id
            )
            context.update(
                payment=_payment_context(payment),
                notifications=_notifications_context(rt, payment),
                links=_links(invoice, payment),
                in_progress=in_progress,
                refresh=max(1, round(rt.store.settings.step_delay)) if in_progress else None,
            )
            return render("invoice.html", **context)
        ticker = invoice.pay_currency or (params.get("pay_currency") or "").lower()
        coin = coins.COINS.get(ticker)
        if coin is not None:
            context.update(coin=_coin_context(coin), quote=_quote(invoice, coin))
        else:
            context["options"] = [
                {**_coin_context(c), **_quote(invoice, c)} for c in coins.COINS.values()
            ]
        return render("invoice.html", **context)


def _selected_payment(
    rt: SandboxRuntime, invoice: Invoice, payment_id: str | None, new: str | None
) -> Payment | None:
    if payment_id and payment_id.isdigit() and int(payment_id) in invoice.payment_ids:
        return rt.store.payments.get(int(payment_id))
    if new or not invoice.payment_ids:
        return None
    return rt.store.payments.get(invoice.payment_ids[-1])


def _amount_problem(outcome: Outcome, paid: Decimal | None, due: Decimal) -> str | None:
    """The amount typed on the page must agree with the button pressed.

    The one form has a single amount field, and pressing Enter in it submits the first
    button ("Pay in full"): without this check, a person meaning "pay less" would get a
    `finished` payment for half the amount.
    """
    if paid is None:
        return None
    if outcome in (Outcome.FINISHED, Outcome.LATE_FINISHED) and paid != due:
        return (
            f"Paying in full sends exactly {due}; leave the amount empty, "
            "or choose Pay less or Pay more."
        )
    if outcome is Outcome.PARTIALLY_PAID and not Decimal(0) < paid < due:
        return f"Paying less needs an amount above 0 and below {due}."
    if outcome is Outcome.OVERPAID and paid <= due:
        return f"Paying more needs an amount above {due}."
    if outcome in (Outcome.EXPIRED, Outcome.FAILED, Outcome.REFUNDED):
        return "Nothing is paid when a payment expires or fails: leave the amount empty."
    return None


@router.post("/payment/")
@router.post("/payment")
async def choose(request: Request) -> Response:
    """The customer's choice: create the invoice's payment and walk it to the outcome."""
    rt = runtime(request)
    form = await _read_form(request)
    if isinstance(form, Response):
        return form
    invoice = _find_invoice(rt, form.get("iid"))
    if invoice is None:
        return message_page(404, "Invoice not found", "There is no invoice with this id.")
    back = f"/payment/?iid={invoice.id}&new=1"
    ticker = (invoice.pay_currency or form.get("pay_currency") or "").lower()
    if ticker not in coins.COINS:
        return message_page(400, "Choose a coin", "Pick one of the coins offered.", back)
    try:
        outcome = Outcome(form.get("outcome", ""))
    except ValueError:
        return message_page(400, "Choose what happens", "Pick one of the choices offered.", back)
    try:
        paid_text = form.get("actually_paid", "").strip()
        paid = amount(paid_text, "actually_paid") if paid_text else None
        due = coins.quote_pay_amount(invoice.price_amount, invoice.price_currency, ticker)
        problem = _amount_problem(outcome, paid, due)
        if problem is not None:
            return message_page(400, "Check the amount", problem, back)
        payment = start_invoice_payment(rt, invoice, ticker, outcome, paid)
    except ApiError as error:
        return message_page(400, "Cannot pay this way", error.message, back)
    return RedirectResponse(f"/payment/?iid={invoice.id}&payment_id={payment.id}", 303)


async def _read_form(request: Request) -> dict[str, str] | Response:
    """A page's form, or the page refusing it: too large, or sent from another site.

    The pages need no key, so without the origin check any web page a developer opens
    could post a form here and pay or fail their sandbox payments behind their back.
    """
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        return message_page(403, "Form from another site", "This form was sent by another site.")
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        return message_page(413, "Form too large", "The form sent is too large.")
    return {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}


# -- the page of a direct payment --------------------------------------------------------

# The buttons, in the order the page shows them: (outcome, label, what happens).
PAYMENT_ACTIONS: tuple[tuple[Outcome, str, str], ...] = (
    (Outcome.FINISHED, "Pay in full", "The exact amount arrives: confirming, then finished."),
    (Outcome.PARTIALLY_PAID, "Pay less", "Less than the amount arrives: partially_paid."),
    (Outcome.OVERPAID, "Pay more", "More than the amount arrives: confirming, then finished."),
    (
        Outcome.LATE_FINISHED,
        "Pay late (after expiry)",
        "The payment expires, then the exact amount arrives anyway: expired, then finished.",
    ),
    (Outcome.EXPIRED, "Let it expire", "Nothing arrives in time: expired."),
    (Outcome.FAILED, "Fail", "The payment fails: failed."),
)
_PAGE_OUTCOMES = {str(outcome): outcome for outcome, _, _ in PAYMENT_ACTIONS}
# Statuses after which nothing more is expected to happen to a payment.
_SETTLED = frozenset({Status.FINISHED, Status.REFUNDED, Status.FAILED, Status.EXPIRED})


def _payment_page_path(payment: Payment) -> str:
    return f"/sandbox/pay/{payment.id}"


def _find_payment(rt: SandboxRuntime, payment_id: str) -> Payment | None:
    return rt.store.payments.get(int(payment_id)) if payment_id.isdigit() else None


def _payment_actions(payment: Payment) -> list[dict[str, Any]]:
    """The buttons; those that send an amount other than the full one offer it to edit."""
    actions = []
    for outcome, label, hint in PAYMENT_ACTIONS:
        default = None
        if outcome is Outcome.PARTIALLY_PAID:
            default = paid_amount(payment.pay_amount, PARTIAL_SHARE)
        elif outcome is Outcome.OVERPAID:
            default = paid_amount(payment.pay_amount, OVERPAID_SHARE)
        actions.append(
            {
                "outcome": str(outcome),
                "label": label,
                "hint": hint,
                "amount": None if default is None else plain(default),
            }
        )
    return actions


@router.get("/sandbox/pay/{payment_id}")
async def payment_page(request: Request, payment_id: str) -> Response:
    rt = runtime(request)
    with rt.store.lock:
        payment = _find_payment(rt, payment_id)
        if payment is None:
            return message_page(404, "Payment not found", "There is no payment with this id.")
        in_progress = rt.simulation.is_walking(payment.id) or any(
            not n.state.settled for n in rt.store.notifications if n.payment_id == payment.id
        )
        return render(
            "pay.html",
            payment=_payment_context(payment),
            coin=_coin_context(payment.coin),
            price=_money(payment.price_amount, payment.price_currency),
            order_id=payment.order_id,
            order_description=payment.order_description,
            valid_until={"at": iso(payment.valid_until), "when": _when(payment.valid_until)},
            settled=payment.status in _SETTLED,
            actions=_payment_actions(payment),
            notifications=_notifications_context(rt, payment),
            in_progress=in_progress,
            refresh=max(1, round(rt.store.settings.step_delay)) if in_progress else None,
        )


@router.post("/sandbox/pay/{payment_id}")
async def pay_payment(request: Request, payment_id: str) -> Response:
    """A button on the payment's page: drive it as ``/sandbox/payments/{id}/drive`` does."""
    rt = runtime(request)
    form = await _read_form(request)
    if isinstance(form, Response):
        return form
    payment = _find_payment(rt, payment_id)
    if payment is None:
        return message_page(404, "Payment not found", "There is no payment with this id.")
    back = _payment_page_path(payment)
    outcome = _PAGE_OUTCOMES.get(form.get("outcome", ""))
    if outcome is None:
        return message_page(400, "Choose what happens", "Pick one of the buttons offered.", back)
    try:
        paid_text = form.get("actually_paid", "").strip()
        paid = amount(paid_text, "actually_paid") if paid_text else None
    except ApiError as error:
        return message_page(400, "Check the amount", error.message, back)
    problem = _amount_problem(outcome, paid, payment.pay_amount)
    if problem is not None:
        return message_page(400, "Check the amount", problem, back)
    # The first step happens now, so the page the browser is sent back to shows it.
    rt.simulation.drive(payment, outcome, paid, first_now=True)
    return RedirectResponse(back, 303)

"""The control API under ``/sandbox``: drive payments, disturb notifications, inject faults
and read back everything the sandbox did. A local tool, so it asks for no key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypeVar

from fastapi import APIRouter
from starlette.requests import Request

from cryptocheckout.sandbox import coins
from cryptocheckout.sandbox.api import find_invoice, invoice_payment_request
from cryptocheckout.sandbox.runtime import SandboxRuntime, runtime
from cryptocheckout.sandbox.simulation import Outcome
from cryptocheckout.sandbox.state import (
    Chaos,
    ChaosOverride,
    Fault,
    Invoice,
    Notification,
    Payment,
    RuntimeSettings,
    Status,
)
from cryptocheckout.sandbox.views import status_view
from cryptocheckout.sandbox.wire import (
    ApiError,
    ErrorCode,
    JsResponse,
    amount,
    invalid,
    iso,
    json_body,
    plain,
)

router = APIRouter(prefix="/sandbox")

E = TypeVar("E", Outcome, Status)
T = TypeVar("T")

# Long polls end by this many seconds at most, so a forgotten test never hangs a worker.
MAX_WAIT = 60.0


# -- views ---------------------------------------------------------------------------------


def chaos_view(chaos: Chaos | ChaosOverride) -> dict[str, Any]:
    return {"duplicates": chaos.duplicates, "delay": chaos.delay, "reorder": chaos.reorder}


def notification_view(notification: Notification) -> dict[str, Any]:
    body = notification.body.decode("utf-8")
    return {
        "id": notification.id,
        "payment_id": notification.payment_id,
        "invoice_id": notification.invoice_id,
        "payment_status": str(notification.payment_status),
        "reason": notification.reason,
        "duplicate_of": notification.duplicate_of,
        "state": str(notification.state),
        "url": notification.url,
        "created_at": iso(notification.created_at),
        "signature": notification.signature,
        "body": body,
        "payload": json.loads(body),
        "attempts": [
            {
                "attempt": attempt.number,
                "at": iso(attempt.at),
                "status_code": attempt.status_code,
                "response_body": attempt.response_body,
                "error": attempt.error,
                "duration_ms": attempt.duration_ms,
            }
            for attempt in notification.attempts
        ],
    }


def payment_view(rt: SandboxRuntime, payment: Payment) -> dict[str, Any]:
    view = status_view(payment)
    view.update(
        {
            "pay_amount_text": plain(payment.pay_amount),
            "actually_paid_text": plain(payment.actually_paid),
            "price_amount_text": plain(payment.price_amount),
            "ipn_callback_url": payment.ipn_callback_url,
            "case": payment.case,
            "valid_until": iso(payment.valid_until),
            "history": [{"status": str(s), "at": iso(at)} for s, at in payment.history],
            "in_progress": rt.simulation.is_walking(payment.id),
            "chaos": chaos_view(payment.chaos),
            "effective_chaos": chaos_view(rt.store.effective_chaos(payment)),
            "notification_ids": [
                n.id for n in rt.store.notifications if n.payment_id == payment.id
            ],
        }
    )
    return view


def invoice_view(rt: SandboxRuntime, invoice: Invoice) -> dict[str, Any]:
    return {
        "id": invoice.id,
        "invoice_url": rt.invoice_url(invoice),
        "order_id": invoice.order_id,
        "order_description": invoice.order_description,
        "price_amount": plain(invoice.price_amount),
        "price_currency": invoice.price_currency,
        "pay_currency": invoice.pay_currency,
        "ipn_callback_url": invoice.ipn_callback_url,
        "success_url": invoice.success_url,
        "cancel_url": invoice.cancel_url,
        "partially_paid_url": invoice.partially_paid_url,
        "created_at": iso(invoice.created_at),
        "payment_ids": list(invoice.payment_ids),
        "chaos": chaos_view(invoice.chaos),
    }


def settings_view(settings: RuntimeSettings) -> dict[str, Any]:
    return {
        "step_delay": settings.step_delay,
        "resend_attempts": settings.resend_attempts,
        "resend_interval": settings.resend_interval,
        "ipn_timeout": settings.ipn_timeout,
        "jwt_ttl": settings.jwt_ttl,
        "status_requires_jwt": settings.status_requires_jwt,
        "amounts_as_strings": settings.amounts_as_strings,
        "chaos": chaos_view(settings.chaos),
    }


def fault_view(fault: Fault) -> dict[str, Any]:
    return {
        "id": fault.id,
        "method": fault.method,
        "path": fault.path,
        "status": fault.status,
        "remaining": fault.remaining,
        "retry_after": fault.retry_after,
        "delay": fault.delay,
        "html": fault.html,
        "hits": fault.hits,
    }


# -- reading request fields ----------------------------------------------------------------


def _number(data: dict[str, Any], name: str, low: float, high: float) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise invalid(f'"{name}" must be a number')
    if not low <= value <= high:
        raise invalid(f'"{name}" must be between {low} and {high}')
    return float(value)


def _int(data: dict[str, Any], name: str, low: int, high: int) -> int | None:
    value = _number(data, name, low, high)
    if value is not None and value != int(value):
        raise invalid(f'"{name}" must be an integer')
    return None if value is None else int(value)


def _flag(data: dict[str, Any], name: str) -> bool | None:
    value = data.get(name)
    if value is not None and not isinstance(value, bool):
        raise invalid(f'"{name}" must be a boolean')
    return value


def _enum_field(data: dict[str, Any], name: str, kind: type[E]) -> E:
    value = data.get(name)
    try:
        return kind(str(value))
    except ValueError:
        choices = ", ".join(item.value for item in kind)
        raise invalid(f'"{name}" must be one of [{choices}]') from None


def _paid(data: dict[str, Any]) -> Decimal | None:
    value = data.get("actually_paid")
    return None if value is None else amount(value, "actually_paid")


def _chaos_override(data: dict[str, Any], target: ChaosOverride) -> None:
    """Apply the fields present in ``data``; an explicit null goes back to inheriting."""
    if "duplicates" in data:
        target.duplicates = _int(data, "duplicates", 0, 10)
    if "delay" in data:
        target.delay = _number(data, "delay", 0, MAX_WAIT)
    if "reorder" in data:
        target.reorder = _flag(data, "reorder")


def _payment(rt: SandboxRuntime, payment_id: str) -> Payment:
    payment = rt.store.payments.get(int(payment_id)) if payment_id.isdigit() else None
    if payment is None:
        raise ApiError(404, ErrorCode.NOT_FOUND, "Payment not found")
    return payment


def _notification(rt: SandboxRuntime, notification_id: str) -> Notification:
    for notification in rt.store.notifications:
        if str(notification.id) == notification_id:
            return notification
    raise ApiError(404, ErrorCode.NOT_FOUND, "Notification not found")


def _query_int(request: Request, name: str) -> int | None:
    text = request.query_params.get(name)
    if text in (None, ""):
        return None
    if not text.isdigit():
        raise invalid(f'"{name}" must be a number')
    return int(text)


def _query_float(request: Request, name: str, default: float) -> float:
    text = request.query_params.get(name)
    if text in (None, ""):
        return default
    try:
        value = float(text)
    except ValueError:
        raise invalid(f'"{name}" must be a number') from None
    if not 0 <= value <= MAX_WAIT:
        raise invalid(f'"{name}" must be between 0 and {MAX_WAIT}')
    return value


async def _wait_until(
    rt: SandboxRuntime, seconds: float, probe: Callable[[], tuple[bool, T]]
) -> tuple[bool, T]:
    """Re-run ``probe`` after every change until it says done or the time is up."""
    deadline = time.monotonic() + seconds
    while True:
        event = rt.store.change_event()
        with rt.store.lock:
            done, result = probe()
        remaining = deadline - time.monotonic()
        if done or remaining <= 0:
            return done, result
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), remaining)


# -- endpoints -----------------------------------------------------------------------------


@router.post("/reset")
async def reset(request: Request) -> JsResponse:
    """Forget everything and go back to the start-up settings."""
    runtime(request).reset()
    return JsResponse({"reset": True})


@router.get("/settings")
async def get_settings(request: Request) -> JsResponse:
    return JsResponse(settings_view(runtime(request).store.settings))


@router.patch("/settings")
async def patch_settings(request: Request) -> JsResponse:
    rt = runtime(request)
    data = await json_body(request)
    settings = rt.store.settings
    step_delay = _number(data, "step_delay", 0, MAX_WAIT)
    resend_attempts = _int(data, "resend_attempts", 0, 100)
    resend_interval = _number(data, "resend_interval", 0, MAX_WAIT)
    ipn_timeout = _number(data, "ipn_timeout", 0.01, MAX_WAIT)
    jwt_ttl = _number(data, "jwt_ttl", 0, 86_400)
    requires_jwt = _flag(data, "status_requires_jwt")
    as_strings = _flag(data, "amounts_as_strings")
    chaos = data.get("chaos")
    if chaos is not None and not isinstance(chaos, dict):
        raise invalid('"chaos" must be an object')
    override = ChaosOverride()
    _chaos_override(chaos or {}, override)
    with rt.store.lock:
        if step_delay is not None:
            settings.step_delay = step_delay
        if resend_attempts is not None:
            settings.resend_attempts = resend_attempts
        if resend_interval is not None:
            settings.resend_interval = resend_interval
        if ipn_timeout is not None:
            settings.ipn_timeout = ipn_timeout
        if jwt_ttl is not None:
            settings.jwt_ttl = jwt_ttl
        if requires_jwt is not None:
            settings.status_requires_jwt = requires_jwt
        if as_strings is not None:
            settings.amounts_as_strings = as_strings
        settings.chaos = override.over(settings.chaos)
    return JsResponse(settings_view(settings))


@router.get("/payments")
async def list_payments(request: Request) -> JsResponse:
    rt = runtime(request)
    invoice_id = _query_int(request, "invoice_id")
    order_id = request.query_params.get("order_id")
    with rt.store.lock:
        items = [
            payment_view(rt, p)
            for p in rt.store.payments.values()
            if (invoice_id is None or p.invoice_id == invoice_id)
            and (order_id is None or p.order_id == order_id)
        ]
    return JsResponse({"items": items})


@router.get("/payments/{payment_id}")
async def get_payment(request: Request, payment_id: str) -> JsResponse:
    """One payment; with ``?wait_for_status=`` it answers once the payment reaches it."""
    rt = runtime(request)
    payment = _payment(rt, payment_id)
    wanted = request.query_params.get("wait_for_status")
    if wanted is not None:
        status = _enum_field({"wait_for_status": wanted}, "wait_for_status", Status)
        timeout = _query_float(request, "timeout", 5.0)
        await _wait_until(rt, timeout, lambda: (payment.status == status, None))
    with rt.store.lock:
        return JsResponse(payment_view(rt, payment))


@router.post("/payments/{payment_id}/drive")
async def drive_payment(request: Request, payment_id: str) -> JsResponse:
    """Walk the payment to an outcome, one status per step_delay, notifying each step."""
    rt = runtime(request)
    payment = _payment(rt, payment_id)
    data = await json_body(request)
    outcome = _enum_field(data, "outcome", Outcome)
    steps = rt.simulation.drive(payment, outcome, _paid(data))
    return JsResponse({"payment_id": payment.id, "steps": [str(s) for s in steps]}, 202)


@router.post("/payments/{payment_id}/status")
async def set_payment_status(request: Request, payment_id: str) -> JsResponse:
    """Move the payment to one status now (any status, in any order) and notify."""
    rt = runtime(request)
    payment = _payment(rt, payment_id)
    data = await json_body(request)
    status = _enum_field(data, "status", Status)
    rt.simulation.set_status(payment, status, _paid(data))
    with rt.store.lock:
        return JsResponse(payment_view(rt, payment))


@router.patch("/payments/{payment_id}/chaos")
async def set_payment_chaos(request: Request, payment_id: str) -> JsResponse:
    rt = runtime(request)
    payment = _payment(rt, payment_id)
    data = await json_body(request)
    with rt.store.lock:
        _chaos_override(data, payment.chaos)
        return JsResponse(payment_view(rt, payment))


@router.post("/payments/{payment_id}/repeat-deposit")
async def repeat_deposit(request: Request, payment_id: str) -> JsResponse:
    """Another deposit to the same address: a new payment whose parent is this one."""
    rt = runtime(request)
    parent = _payment(rt, payment_id)
    data = await json_body(request)
    status = _enum_field({"status": data.get("status", "finished")}, "status", Status)
    if status not in (Status.FINISHED, Status.PARTIALLY_PAID):
        raise invalid('"status" must be one of [finished, partially_paid]')
    child = rt.simulation.repeat_deposit(parent, status, _paid(data))
    with rt.store.lock:
        return JsResponse(payment_view(rt, child), 201)


@router.post("/payments/{payment_id}/resend")
async def resend_last(request: Request, payment_id: str) -> JsResponse:
    """Send the payment's latest notification again, byte for byte."""
    rt = runtime(request)
    payment = _payment(rt, payment_id)
    originals = [
        n for n in rt.store.notifications if n.payment_id == payment.id and n.reason == "status"
    ]
    if not originals:
        raise ApiError(404, ErrorCode.NOT_FOUND, "Payment has no notification to resend")
    copy = rt.notifier.resend(originals[-1])
    return JsResponse(notification_view(copy), 202)


@router.get("/invoices")
async def list_invoices(request: Request) -> JsResponse:
    rt = runtime(request)
    with rt.store.lock:
        return JsResponse({"items": [invoice_view(rt, i) for i in rt.store.invoices.values()]})


@router.get("/invoices/{invoice_id}")
async def get_invoice(request: Request, invoice_id: str) -> JsResponse:
    rt = runtime(request)
    invoice = find_invoice(rt, invoice_id)
    with rt.store.lock:
        return JsResponse(invoice_view(rt, invoice))


@router.patch("/invoices/{invoice_id}/chaos")
async def set_invoice_chaos(request: Request, invoice_id: str) -> JsResponse:
    """Chaos for every payment the invoice gets (each may still override it)."""
    rt = runtime(request)
    invoice = find_invoice(rt, invoice_id)
    data = await json_body(request)
    with rt.store.lock:
        _chaos_override(data, invoice.chaos)
        return JsResponse(invoice_view(rt, invoice))


@router.post("/invoices/{invoice_id}/pay")
async def pay_invoice(request: Request, invoice_id: str) -> JsResponse:
    """What the hosted page does when a customer picks a coin and an outcome."""
    rt = runtime(request)
    invoice = find_invoice(rt, invoice_id)
    data = await json_body(request)
    currency = data.get("pay_currency") or invoice.pay_currency
    if not isinstance(currency, str) or currency.lower() not in coins.COINS:
        raise invalid('"pay_currency" must name a supported coin')
    outcome = _enum_field({"outcome": data.get("outcome", "finished")}, "outcome", Outcome)
    payment = start_invoice_payment(rt, invoice, currency.lower(), outcome, _paid(data))
    with rt.store.lock:
        return JsResponse(payment_view(rt, payment), 201)


def start_invoice_payment(
    rt: SandboxRuntime,
    invoice: Invoice,
    pay_currency: str,
    outcome: Outcome | None,
    actually_paid: Decimal | None,
) -> Payment:
    payment = rt.simulation.create_payment(invoice_payment_request(rt, invoice, pay_currency))
    if outcome is not None:
        rt.simulation.drive(payment, outcome, actually_paid)
    return payment


@router.get("/notifications")
async def list_notifications(request: Request) -> JsResponse:
    """Notifications sent, oldest first, filtered; waits for them when asked to.

    ``min_count`` waits until that many match; ``settled=true`` also waits until each of
    them is delivered or has given up and the payments concerned (all, without a filter)
    have no statuses still to come; ``timeout`` (default 5 s) bounds the wait. The
    answer says whether the condition was met in ``complete``.
    """
    rt = runtime(request)
    payment_id = _query_int(request, "payment_id")
    invoice_id = _query_int(request, "invoice_id")
    status = request.query_params.get("payment_status")
    min_count = _query_int(request, "min_count") or 0
    settled = request.query_params.get("settled", "").lower() in ("1", "true")
    timeout = _query_float(request, "timeout", 5.0) if min_count or settled else 0.0

    def probe() -> tuple[bool, list[Notification]]:
        items = [
            n
            for n in rt.store.notifications
            if (payment_id is None or n.payment_id == payment_id)
            and (invoice_id is None or n.invoice_id == invoice_id)
            and (status is None or n.payment_status == status)
        ]
        done = len(items) >= min_count
        if settled and done:
            done = all(n.state.settled for n in items) and not _walking(rt, payment_id, invoice_id)
        return done, items

    complete, items = await _wait_until(rt, timeout, probe)
    with rt.store.lock:
        views = [notification_view(n) for n in items]
    return JsResponse({"items": views, "complete": complete})


def _walking(rt: SandboxRuntime, payment_id: int | None, invoice_id: int | None) -> bool:
    walking = rt.simulation.walking()
    if payment_id is not None:
        return payment_id in walking
    if invoice_id is not None:
        invoice = rt.store.invoices.get(invoice_id)
        return invoice is not None and not walking.isdisjoint(invoice.payment_ids)
    return bool(walking)


@router.get("/notifications/{notification_id}")
async def get_notification(request: Request, notification_id: str) -> JsResponse:
    rt = runtime(request)
    with rt.store.lock:
        return JsResponse(notification_view(_notification(rt, notification_id)))


@router.post("/notifications/{notification_id}/resend")
async def resend_notification(request: Request, notification_id: str) -> JsResponse:
    rt = runtime(request)
    copy = rt.notifier.resend(_notification(rt, notification_id))
    return JsResponse(notification_view(copy), 202)


@router.get("/faults")
async def list_faults(request: Request) -> JsResponse:
    rt = runtime(request)
    with rt.store.lock:
        return JsResponse({"items": [fault_view(f) for f in rt.store.faults]})


@router.post("/faults")
async def add_fault(request: Request) -> JsResponse:
    """Answer the next ``count`` calls of ``path`` (``/v1/payment/{payment_id}``, a concrete
    path, or a prefix ending in ``*``) with ``status``, optionally after ``delay`` seconds
    and with a ``retry_after`` header; ``html`` answers with a page like a CDN's.
    """
    rt = runtime(request)
    data = await json_body(request)
    path = data.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise invalid('"path" must be a path starting with /')
    method = data.get("method")
    if method is not None and not isinstance(method, str):
        raise invalid('"method" must be a string')
    status = _int(data, "status", 400, 599)
    delay = _number(data, "delay", 0, MAX_WAIT) or 0.0
    if status is None and not delay:
        raise invalid('"status" or "delay" is required')
    retry_after = data.get("retry_after")
    if retry_after is not None and not isinstance(retry_after, str | int):
        raise invalid('"retry_after" must be a string or a number')
    fault = Fault(
        id=rt.store.serial(),
        path=path,
        method=method.upper() if method else None,
        status=status,
        remaining=_int(data, "count", 1, 10_000) or 1,
        retry_after=None if retry_after is None else str(retry_after),
        delay=delay,
        html=bool(_flag(data, "html")),
    )
    with rt.store.lock:
        rt.store.faults.append(fault)
    return JsResponse(fault_view(fault), 201)


@router.delete("/faults")
async def clear_faults(request: Request) -> JsResponse:
    rt = runtime(request)
    with rt.store.lock:
        rt.store.faults.clear()
    return JsResponse({"items": []})


@router.get("/requests")
async def list_requests(request: Request) -> JsResponse:
    """The latest API calls received (method, path, status, key validity; never the key)."""
    rt = runtime(request)
    path = request.query_params.get("path")
    with rt.store.lock:
        items = [
            {
                "at": iso(r.at),
                "request_id": r.request_id,
                "method": r.method,
                "path": r.path,
                "query": r.query,
                "status": r.status,
                "api_key": r.api_key,
                "bearer": r.bearer,
                "content_type": r.content_type,
                "body": r.body,
            }
            for r in rt.store.requests
            if path is None or r.path == path
        ]
    return JsResponse({"items": items})

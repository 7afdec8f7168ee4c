"""The admin console: server-rendered pages for staff at /admin (no JavaScript needed).

Every page but the login needs a session (`admin/sessions.py`); without one it answers 303 to
the login page. Every form that changes something carries the session's CSRF token; a POST
without a valid one is a 403 and changes nothing. The pages read through the admin
repository and act through `admin/service.py`, as the bearer API does, so both record the
same audit trail: who (the session's label) and why.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode, urlsplit

import jinja2
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData, MutableHeaders, UploadFile
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cryptocheckout.admin import repository, service, sessions
from cryptocheckout.admin.models import AdminAction
from cryptocheckout.admin.router import product_views, replay_notification
from cryptocheckout.admin.sessions import CSRF_FIELD, SESSION_COOKIE, LoginThrottle, Staff
from cryptocheckout.admin.views import (
    RejectedSummary,
    amounts_of,
    can_mark_paid,
    fiat,
    likely_cause,
    parse_uuid,
    pretty_json,
    timeline,
)
from cryptocheckout.catalogue import repository as catalogue_repository
from cryptocheckout.catalogue import service as catalogue
from cryptocheckout.catalogue.schemas import KeysIn, ProductCreate, ProductUpdate
from cryptocheckout.config import Settings
from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.db import read_only, unit_of_work
from cryptocheckout.kit.errors import DomainError
from cryptocheckout.kit.http import AppKeyRing, AppSettings, SessionMaker
from cryptocheckout.kit.jobs_models import Job, JobStatus
from cryptocheckout.kit.money import format_money
from cryptocheckout.kit.problems import Problem
from cryptocheckout.kit.security import tokens_match
from cryptocheckout.orders.models import Order, OrderStatus
from cryptocheckout.outbound import repository as outbound_repository
from cryptocheckout.outbound.schemas import EndpointCreate
from cryptocheckout.payments.events import OrderEventType
from cryptocheckout.payments.models import Payment, PaymentStatus
from cryptocheckout.payments.queries import balance_of
from cryptocheckout.webhooks.models import WebhookLog, WebhookLogStatus

HERE = Path(__file__).parent
E = TypeVar("E", bound=StrEnum)
STYLESHEET = (HERE / "static" / "console.css").read_bytes()
PAGE_SIZE = 50
RECENT_DELIVERIES = 10  # attempts shown per webhook endpoint
MAX_FILTER = 320

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "style-src 'self'",
        "img-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

NAVIGATION = (
    ("Payments", "/admin/payments"),
    ("Notifications", "/admin/webhook-logs"),
    ("Rejected", "/admin/rejected-webhooks"),
    ("Jobs", "/admin/jobs"),
    ("Products", "/admin/products"),
    ("Orders", "/admin/orders"),
    ("Webhooks", "/admin/webhooks"),
)


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def _money(amount: Decimal | None) -> str:
    return format_money(amount) if amount is not None else ""


_templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_templates.filters["when"] = _when
_templates.filters["money"] = _money
_templates.filters["fiat"] = fiat
_templates.filters["pretty_json"] = pretty_json


# -- sessions, CSRF, headers ------------------------------------------------------------------


class NeedsSignIn(Exception):
    """No valid session: the page answers 303 to the login page."""


class CsrfRefused(Exception):
    """A POST without the session's CSRF token (or from another site): 403, nothing done."""


def _secure(settings: Settings) -> bool:
    return settings.public_base_url.startswith("https://")


def _from_another_site(request: Request) -> bool:
    # With Referrer-Policy: no-referrer browsers send `Origin: null` even for our own forms,
    # so a null origin proves nothing either way; Sec-Fetch-Site still tells.
    if request.headers.get("sec-fetch-site") == "cross-site":
        return True
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return False
    return urlsplit(origin).netloc != request.headers.get("host")


async def current_staff(
    request: Request, sessionmaker: SessionMaker, settings: AppSettings
) -> Staff:
    async with read_only(sessionmaker) as session:
        staff = await sessions.signed_in(session, settings, request.cookies.get(SESSION_COOKIE))
    if staff is None:
        raise NeedsSignIn()
    return staff


StaffDep = Annotated[Staff, Depends(current_staff)]


async def checked_form(request: Request, staff: StaffDep) -> FormData:
    """The POSTed form, once its CSRF token proves it came from this session's own page."""
    if _from_another_site(request):
        raise CsrfRefused()
    form = await request.form()
    token = form.get(CSRF_FIELD)
    if not isinstance(token, str) or not staff.csrf_valid(token):
        raise CsrfRefused()
    return form


FormDep = Annotated[FormData, Depends(checked_form)]


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


class ConsoleHeaders:
    """Pure ASGI middleware: the security headers on every response under /admin."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path == "/admin" or path.startswith("/admin/")):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


def render(
    template: str,
    *,
    staff: Staff | None,
    status_code: int = 200,
    section: str | None = None,
    headers: Mapping[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    html = _templates.get_template(template).render(
        staff=staff,
        csrf_field=CSRF_FIELD,
        navigation=NAVIGATION,
        section=section,
        **context,
    )
    return HTMLResponse(html, status_code=status_code, headers=headers)


def message(
    staff: Staff | None, status_code: int, title: str, text: str, back: str | None = None
) -> HTMLResponse:
    return render(
        "message.html",
        staff=staff,
        status_code=status_code,
        title=title,
        text=text,
        back=back,
    )


def _see(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _not_found(staff: Staff, what: str) -> HTMLResponse:
    return message(staff, 404, "Not found", f"There is no such {what}.")


router = APIRouter(prefix="/admin", include_in_schema=False)


# -- sign in and out --------------------------------------------------------------------------


@router.get("/static/console.css")
async def stylesheet() -> Response:
    return Response(STYLESHEET, media_type="text/css")


@router.get("/login")
async def login_page(
    request: Request, sessionmaker: SessionMaker, settings: AppSettings
) -> Response:
    async with read_only(sessionmaker) as session:
        staff = await sessions.signed_in(session, settings, request.cookies.get(SESSION_COOKIE))
    if staff is not None:
        return _see("/admin")
    return render("login.html", staff=None, error=None)


@router.post("/login")
async def login(request: Request, sessionmaker: SessionMaker, settings: AppSettings) -> Response:
    # No session yet, so no CSRF token: a cross-site form is refused by its Origin, and a
    # forged sign-in would need the token anyway.
    if _from_another_site(request):
        return message(None, 403, "Refused", "This form was sent from another site.")
    throttle: LoginThrottle = request.app.state.admin_login_throttle
    address = request.client.host if request.client else "unknown"
    wait = throttle.retry_after(address)
    if wait is not None:
        return render(
            "login.html",
            staff=None,
            status_code=429,
            headers={"Retry-After": str(wait)},
            error=f"Too many failed attempts. Try again in {(wait + 59) // 60} minute(s).",
        )
    form = await request.form()
    token = _text(form, "token")
    if not tokens_match(token, settings.admin_token.get_secret_value()):
        throttle.failed(address)
        return render("login.html", staff=None, status_code=401, error="That token is not right.")
    throttle.succeeded(address)
    async with unit_of_work(sessionmaker) as session:
        secret, _ = await sessions.sign_in(session, settings)
    response = _see("/admin")
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(sessions.SESSION_TTL.total_seconds()),
        httponly=True,
        samesite="strict",
        secure=_secure(settings),
        path="/admin",
    )
    return response


@router.post("/logout")
async def logout(request: Request, sessionmaker: SessionMaker, _form: FormDep) -> Response:
    async with unit_of_work(sessionmaker) as session:
        await sessions.sign_out(session, request.cookies.get(SESSION_COOKIE))
    response = _see("/admin/login")
    response.delete_cookie(SESSION_COOKIE, path="/admin")
    return response


# -- home: what needs attention ---------------------------------------------------------------


@router.get("")
async def home(staff: StaffDep, sessionmaker: SessionMaker) -> Response:
    async with read_only(sessionmaker) as session:
        flagged = await repository.flagged_payments(session)
        underpaid_orders, underpaid_count = await repository.underpaid_orders(session)
        underpaid = [(order, await balance_of(session, order)) for order in underpaid_orders]
        dead, dead_count = await repository.dead_jobs(session)
        failed, failed_count = await repository.failed_notifications(session)
        waiting = await repository.paid_waiting_for_keys(session)
        rejected = await repository.rejected_since(session, utcnow() - timedelta(hours=1))
    summaries = [
        RejectedSummary(reason, count, likely_cause(reason, count))
        for reason, count in sorted(rejected.items(), key=lambda item: -item[1])
    ]
    return render(
        "home.html",
        staff=staff,
        flagged=flagged,
        underpaid=underpaid,
        underpaid_count=underpaid_count,
        dead=dead,
        dead_count=dead_count,
        failed=failed,
        failed_count=failed_count,
        waiting=waiting,
        rejected=summaries,
        quiet=not (flagged or underpaid or dead or failed or waiting or summaries),
    )


# -- lists ------------------------------------------------------------------------------------


@dataclass
class Filters:
    """A list's query: the values shown back in its form, and problems with them."""

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def text(self, request: Request, name: str, limit: int = MAX_FILTER) -> str | None:
        value = request.query_params.get(name, "").strip()
        self.values[name] = value
        if not value:
            return None
        if len(value) > limit or any(ord(c) < 32 or ord(c) == 127 for c in value):
            self.errors[name] = "not a valid value"
            return None
        return value

    def choice(self, request: Request, name: str, enum: type[E]) -> E | None:
        value = self.text(request, name)
        if value is None:
            return None
        try:
            return enum(value)
        except ValueError:
            self.errors[name] = "not one of the choices"
            return None

    def uuid(self, request: Request, name: str) -> uuid.UUID | None:
        value = self.text(request, name)
        if value is None:
            return None
        parsed = parse_uuid(value)
        if parsed is None:
            self.errors[name] = "not an id"
        return parsed

    def next_url(self, path: str, cursor: str | None) -> str | None:
        if cursor is None:
            return None
        query = {name: value for name, value in self.values.items() if value}
        return f"{path}?{urlencode({**query, 'cursor': cursor})}"


Lister = Callable[[str | None], Awaitable[tuple[Sequence[Any], str | None]]]


async def _list_page(
    request: Request, staff: Staff, filters: Filters, lister: Lister, template: str, **context: Any
) -> Response:
    cursor = request.query_params.get("cursor") or None
    rows: Sequence[Any] = []
    next_cursor = None
    status_code = 200
    if filters.errors:
        status_code = 422
    else:
        try:
            rows, next_cursor = await lister(cursor)
        except DomainError:  # a cursor this console did not give
            filters.errors["cursor"] = "not a page of this list"
            status_code = 422
    return render(
        template,
        staff=staff,
        status_code=status_code,
        rows=rows,
        filters=filters.values,
        errors=filters.errors,
        next_url=filters.next_url(request.url.path, next_cursor),
        first_url=request.url.path if cursor else None,
        **context,
    )


@router.get("/payments")
async def payments(request: Request, staff: StaffDep, sessionmaker: SessionMaker) -> Response:
    filters = Filters()
    status = filters.choice(request, "status", PaymentStatus)
    email = filters.text(request, "email")
    external_id = filters.text(request, "external_id", 64)
    order_id = filters.uuid(request, "order_id")

    async def lister(cursor: str | None) -> tuple[Sequence[Payment], str | None]:
        async with read_only(sessionmaker) as session:
            return await repository.list_payments(
                session,
                status=status,
                order_id=order_id,
                external_id=external_id,
                email=email,
                limit=PAGE_SIZE,
                cursor=cursor,
            )

    return await _list_page(
        request,
        staff,
        filters,
        lister,
        "payments.html",
        section="Payments",
        statuses=[s.value for s in PaymentStatus],
    )


@router.get("/webhook-logs")
async def webhook_logs(request: Request, staff: StaffDep, sessionmaker: SessionMaker) -> Response:
    filters = Filters()
    status = filters.choice(request, "status", WebhookLogStatus)
    provider = filters.text(request, "provider", 32)
    external_id = filters.text(request, "external_id", 64)

    async def lister(cursor: str | None) -> tuple[Sequence[WebhookLog], str | None]:
        async with read_only(sessionmaker) as session:
            return await repository.list_webhook_logs(
                session,
                provider=provider,
                status=status,
                external_id=external_id,
                limit=PAGE_SIZE,
                cursor=cursor,
            )

    return await _list_page(
        request,
        staff,
        filters,
        lister,
        "webhook_logs.html",
        section="Notifications",
        statuses=[s.value for s in WebhookLogStatus],
    )


@router.get("/rejected-webhooks")
async def rejected(request: Request, staff: StaffDep, sessionmaker: SessionMaker) -> Response:
    async def lister(cursor: str | None) -> tuple[Sequence[Any], str | None]:
        async with read_only(sessionmaker) as session:
            return await repository.list_rejected(session, limit=PAGE_SIZE, cursor=cursor)

    return await _list_page(request, staff, Filters(), lister, "rejected.html", section="Rejected")


@router.get("/jobs")
async def jobs_page(request: Request, staff: StaffDep, sessionmaker: SessionMaker) -> Response:
    filters = Filters()
    status = filters.choice(request, "status", JobStatus)
    kind = filters.text(request, "kind", 64)

    async def lister(cursor: str | None) -> tuple[Sequence[Job], str | None]:
        async with read_only(sessionmaker) as session:
            return await repository.list_jobs(
                session, status=status, kind=kind, limit=PAGE_SIZE, cursor=cursor
            )

    return await _list_page(
        request,
        staff,
        filters,
        lister,
        "jobs.html",
        section="Jobs",
        statuses=[s.value for s in JobStatus],
    )


@router.get("/orders")
async def orders_page(request: Request, staff: StaffDep, sessionmaker: SessionMaker) -> Response:
    filters = Filters()
    status = filters.choice(request, "status", OrderStatus)
    email = filters.text(request, "email")

    async def lister(cursor: str | None) -> tuple[Sequence[Order], str | None]:
        async with read_only(sessionmaker) as session:
            return await repository.list_orders(
                session, status=status, email=email, limit=PAGE_SIZE, cursor=cursor
            )

    return await _list_page(
        request,
        staff,
        filters,
        lister,
        "orders.html",
        section="Orders",
        statuses=[s.value for s in OrderStatus],
    )


async def _webhooks_page(
    sessionmaker: SessionMaker,
    staff: Staff,
    *,
    status_code: int = 200,
    error: str | None = None,
    **context: Any,
) -> Response:
    async with read_only(sessionmaker) as session:
        endpoints, more = await outbound_repository.list_endpoints(
            session, limit=PAGE_SIZE, cursor=None
        )
        deliveries = {
            endpoint.id: (
                await outbound_repository.list_deliveries(
                    session, endpoint.id, limit=RECENT_DELIVERIES, cursor=None
                )
            )[0]
            for endpoint in endpoints
        }
    return render(
        "webhooks.html",
        staff=staff,
        section="Webhooks",
        status_code=status_code,
        endpoints=endpoints,
        more_endpoints=more is not None,
        deliveries=deliveries,
        error=error,
        event_types=[event.value for event in OrderEventType],
        **{"values": {}, "errors": {}, "created": None, **context},
    )


@router.get("/webhooks")
async def webhooks(staff: StaffDep, sessionmaker: SessionMaker) -> Response:
    return await _webhooks_page(sessionmaker, staff)


@router.post("/webhooks")
async def create_webhook(
    staff: StaffDep, form: FormDep, sessionmaker: SessionMaker, settings: AppSettings
) -> Response:
    values = {name: _text(form, name).strip() for name in ("url", "description")}
    events = [value for value in form.getlist("events") if isinstance(value, str)]
    try:
        data = EndpointCreate.model_validate(
            {
                "url": values["url"],
                "events": events or None,
                "description": values["description"] or None,
            }
        )
        async with unit_of_work(sessionmaker) as session:
            endpoint = await service.create_webhook_endpoint(
                session, data, allow_private=settings.webhooks_allow_private, actor=staff.label
            )
            created = {"id": endpoint.id, "url": endpoint.url, "secret": endpoint.secret}
    except (ValidationError, DomainError) as error:
        return await _webhooks_page(
            sessionmaker,
            staff,
            status_code=422,
            values={**values, "events": events},
            errors=_field_errors(error),
        )
    # The secret is shown on this answer only (no-store): never again, and never listed.
    return await _webhooks_page(sessionmaker, staff, status_code=201, created=created)


@router.post("/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver")
async def redeliver_webhook(
    endpoint_id: str,
    delivery_id: str,
    staff: StaffDep,
    _form: FormDep,
    sessionmaker: SessionMaker,
) -> Response:
    endpoint, delivery = parse_uuid(endpoint_id), parse_uuid(delivery_id)
    if endpoint is None or delivery is None:
        return _not_found(staff, "delivery")
    try:
        async with unit_of_work(sessionmaker) as session:
            await service.redeliver_webhook(session, endpoint, delivery, actor=staff.label)
    except DomainError as error:
        if error.kind == "not_found":
            return _not_found(staff, "delivery")
        return await _webhooks_page(sessionmaker, staff, status_code=409, error=error.detail)
    return _see("/admin/webhooks")


# -- a payment, an order: amounts and one timeline --------------------------------------------


async def _order_context(sessionmaker: SessionMaker, order_id: uuid.UUID) -> dict[str, Any] | None:
    async with read_only(sessionmaker) as session:
        found = await repository.order_detail(session, order_id)
        if found is None:
            return None
        external_ids = [p.external_id for p in found.payments if p.external_id]
        notifications = await repository.notifications_of(session, external_ids)
    return {
        "order": found.order,
        "payments": found.payments,
        "payment_amounts": {p.id: amounts_of(p) for p in found.payments},
        "entries": timeline(found.timeline, notifications, found.jobs, found.actions),
        "can_mark_paid": can_mark_paid(found.order, found.payments),
    }


@router.get("/payments/{payment_id}")
async def payment_page(payment_id: str, staff: StaffDep, sessionmaker: SessionMaker) -> Response:
    parsed = parse_uuid(payment_id)
    payment = None
    if parsed is not None:
        async with read_only(sessionmaker) as session:
            payment = await session.get(Payment, parsed)
    if payment is None:
        return _not_found(staff, "payment")
    context = await _order_context(sessionmaker, payment.order_id)
    if context is None:
        return _not_found(staff, "payment")
    return render(
        "payment.html",
        staff=staff,
        section="Payments",
        payment=payment,
        amounts=amounts_of(payment),
        error=None,
        **context,
    )


@router.get("/orders/{order_id}")
async def order_page(order_id: str, staff: StaffDep, sessionmaker: SessionMaker) -> Response:
    parsed = parse_uuid(order_id)
    context = await _order_context(sessionmaker, parsed) if parsed else None
    if context is None:
        return _not_found(staff, "order")
    return render("order.html", staff=staff, section="Orders", error=None, reason="", **context)


@router.post("/orders/{order_id}/mark-paid")
async def mark_paid(
    order_id: str, staff: StaffDep, form: FormDep, sessionmaker: SessionMaker
) -> Response:
    parsed = parse_uuid(order_id)
    if parsed is None:
        return _not_found(staff, "order")
    reason = _text(form, "reason")
    try:
        async with unit_of_work(sessionmaker) as session:
            await service.mark_paid(session, parsed, reason, actor=staff.label)
    except DomainError as error:
        context = await _order_context(sessionmaker, parsed)
        if context is None:
            return _not_found(staff, "order")
        status_code = 422 if error.kind == "invalid" else 409
        return render(
            "order.html",
            staff=staff,
            section="Orders",
            status_code=status_code,
            error=error.detail,
            reason=reason,
            **context,
        )
    return _see(f"/admin/orders/{parsed}")


@router.post("/orders/{order_id}/resend-email")
async def resend_email(
    order_id: str, staff: StaffDep, form: FormDep, sessionmaker: SessionMaker
) -> Response:
    parsed = parse_uuid(order_id)
    if parsed is None:
        return _not_found(staff, "order")
    try:
        async with unit_of_work(sessionmaker) as session:
            await service.resend_email(session, parsed, actor=staff.label)
    except DomainError as error:
        context = await _order_context(sessionmaker, parsed)
        if context is None:
            return _not_found(staff, "order")
        return render(
            "order.html",
            staff=staff,
            section="Orders",
            status_code=409,
            error=error.detail,
            reason="",
            **context,
        )
    return _see(f"/admin/orders/{parsed}")


# -- notifications and jobs: replay and retry -------------------------------------------------


@router.get("/webhook-logs/{log_id}")
async def webhook_log_page(log_id: str, staff: StaffDep, sessionmaker: SessionMaker) -> Response:
    parsed = parse_uuid(log_id)
    log = payment = None
    actions: Sequence[AdminAction] = []
    if parsed is not None:
        async with read_only(sessionmaker) as session:
            log = await session.get(WebhookLog, parsed)
            if log is not None:
                actions = await repository.actions_on(session, log.id)
                if log.external_id:
                    payment = await repository.payment_by_external_id(session, log.external_id)
    if log is None:
        return _not_found(staff, "notification")
    return render(
        "webhook_log.html",
        staff=staff,
        section="Notifications",
        log=log,
        payment=payment,
        actions=actions,
    )


@router.post("/webhook-logs/{log_id}/replay")
async def replay(
    log_id: str,
    staff: StaffDep,
    form: FormDep,
    sessionmaker: SessionMaker,
    settings: AppSettings,
) -> Response:
    parsed = parse_uuid(log_id)
    if parsed is None:
        return _not_found(staff, "notification")
    try:
        await replay_notification(
            sessionmaker,
            parsed,
            settings.payment_tolerance_percent,
            actor=staff.label,
            note=_text(form, "note").strip()[:500] or None,
        )
    except Problem:
        return _not_found(staff, "notification")
    return _see(f"/admin/webhook-logs/{parsed}")


@router.post("/jobs/{job_id}/retry")
async def retry(
    job_id: str, staff: StaffDep, form: FormDep, sessionmaker: SessionMaker
) -> Response:
    parsed = parse_uuid(job_id)
    if parsed is None:
        return _not_found(staff, "job")
    try:
        async with unit_of_work(sessionmaker) as session:
            await service.retry_job(
                session, parsed, actor=staff.label, note=_text(form, "note").strip()[:500] or None
            )
    except DomainError:
        return _not_found(staff, "job")
    return _see("/admin/jobs?status=dead")


# -- products and keys ------------------------------------------------------------------------


def _field_errors(error: ValidationError | DomainError) -> dict[str, str]:
    if isinstance(error, DomainError):
        found = {str(issue.loc[0]): issue.message for issue in error.fields if issue.loc}
        return found or {"form": error.detail}
    return {
        str(issue["loc"][0]) if issue["loc"] else "form": str(issue["msg"])
        for issue in error.errors()
    }


@router.get("/products")
async def products(staff: StaffDep, sessionmaker: SessionMaker) -> Response:
    async with read_only(sessionmaker) as session:
        views = await product_views(session)
    return render(
        "products.html", staff=staff, section="Products", products=views, values={}, errors={}
    )


@router.post("/products")
async def create_product(staff: StaffDep, form: FormDep, sessionmaker: SessionMaker) -> Response:
    values = {name: _text(form, name).strip() for name in ("sku", "name", "price", "currency")}
    try:
        data = ProductCreate.model_validate(values)
        async with unit_of_work(sessionmaker) as session:
            product = await catalogue.create_product(session, data)
            service.record(
                session,
                actor=staff.label,
                action="create_product",
                subject="product",
                subject_id=product.id,
                outcome=f"{product.sku}: {format_money(product.price)} {product.currency}",
            )
    except (ValidationError, DomainError) as error:
        async with read_only(sessionmaker) as session:
            views = await product_views(session)
        return render(
            "products.html",
            staff=staff,
            section="Products",
            status_code=409 if isinstance(error, DomainError) and error.kind == "conflict" else 422,
            products=views,
            values=values,
            errors=_field_errors(error),
        )
    return _see(f"/admin/products/{product.id}")


async def _product_page(
    sessionmaker: SessionMaker,
    staff: Staff,
    product_id: uuid.UUID,
    *,
    status_code: int = 200,
    **context: Any,
) -> Response:
    async with read_only(sessionmaker) as session:
        product = await catalogue_repository.get(session, product_id)
        if product is None:
            return _not_found(staff, "product")
        stock = (await catalogue_repository.stock(session, [product_id]))[product_id]
        actions = await repository.actions_on(session, product_id)
    context.setdefault("errors", {})
    context.setdefault("key_errors", None)
    context.setdefault("imported", None)
    context.setdefault("saved", False)
    return render(
        "product.html",
        staff=staff,
        section="Products",
        status_code=status_code,
        product=product,
        stock=stock,
        actions=actions,
        **context,
    )


@router.get("/products/{product_id}")
async def product_page(product_id: str, staff: StaffDep, sessionmaker: SessionMaker) -> Response:
    parsed = parse_uuid(product_id)
    if parsed is None:
        return _not_found(staff, "product")
    return await _product_page(sessionmaker, staff, parsed)


@router.post("/products/{product_id}")
async def edit_product(
    product_id: str, staff: StaffDep, form: FormDep, sessionmaker: SessionMaker
) -> Response:
    parsed = parse_uuid(product_id)
    if parsed is None:
        return _not_found(staff, "product")
    values: dict[str, Any] = {n: _text(form, n).strip() for n in ("name", "price", "currency")}
    values["active"] = _text(form, "active") == "on"
    try:
        data = ProductUpdate.model_validate(values)
        async with unit_of_work(sessionmaker) as session:
            product = await catalogue.update_product(session, parsed, data)
            service.record(
                session,
                actor=staff.label,
                action="edit_product",
                subject="product",
                subject_id=product.id,
                outcome=(
                    f"{product.name}: {format_money(product.price)} {product.currency}, "
                    f"{'active' if product.active else 'inactive'}"
                ),
            )
    except (ValidationError, DomainError) as error:
        if isinstance(error, DomainError) and error.kind == "not_found":
            return _not_found(staff, "product")
        return await _product_page(
            sessionmaker, staff, parsed, status_code=422, errors=_field_errors(error)
        )
    return await _product_page(sessionmaker, staff, parsed, saved=True)


async def _uploaded_lines(upload: UploadFile | str | None) -> list[str]:
    if not isinstance(upload, UploadFile):
        return []
    raw = await upload.read()
    return raw.decode("utf-8", "replace").splitlines()


@router.post("/products/{product_id}/keys")
async def import_keys(
    product_id: str, staff: StaffDep, form: FormDep, sessionmaker: SessionMaker, ring: AppKeyRing
) -> Response:
    parsed = parse_uuid(product_id)
    if parsed is None:
        return _not_found(staff, "product")
    lines = _text(form, "keys").splitlines() + await _uploaded_lines(form.get("key_file"))
    keys = [line.strip() for line in lines if line.strip()]
    if not keys:
        return await _product_page(
            sessionmaker, staff, parsed, status_code=422, key_errors="No keys given."
        )
    try:
        data = KeysIn.model_validate({"keys": keys})
        async with unit_of_work(sessionmaker) as session:
            added, duplicates = await service.import_keys(
                session, ring, parsed, data.keys, actor=staff.label
            )
    except ValidationError:
        return await _product_page(
            sessionmaker,
            staff,
            parsed,
            status_code=422,
            key_errors="Keys must be 1 to 512 printable characters each, at most 1000 at once.",
        )
    except DomainError:
        return _not_found(staff, "product")
    return await _product_page(
        sessionmaker, staff, parsed, imported={"added": added, "duplicates": duplicates}
    )


@router.api_route("/{rest:path}", methods=["GET", "POST"])
async def unknown(staff: StaffDep) -> Response:
    return message(staff, 404, "Not found", "There is no such page in the console.", "/admin")


# -- wiring -----------------------------------------------------------------------------------


def install_console(app: FastAPI) -> None:
    """Adds the console's routes, its security headers and its sign-in throttle to the app."""
    app.state.admin_login_throttle = LoginThrottle()

    async def needs_sign_in(_request: Request, _exc: Exception) -> Response:
        return _see("/admin/login")

    async def csrf_refused(_request: Request, _exc: Exception) -> Response:
        return message(
            None,
            403,
            "Refused",
            "This form's security token is missing or out of date. Go back, reload the page "
            "and try again.",
            "/admin",
        )

    app.add_exception_handler(NeedsSignIn, needs_sign_in)
    app.add_exception_handler(CsrfRefused, csrf_refused)
    app.add_middleware(ConsoleHeaders)
    app.include_router(router)

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cryptocheckout.admin import repository, service
from cryptocheckout.admin.schemas import (
    AdminActionOut,
    AdminOrderDetail,
    AdminOrderList,
    AdminPayment,
    AdminPaymentList,
    AdminProductList,
    EmailQueued,
    JobList,
    JobOut,
    MarkPaidIn,
    PaymentDetail,
    RejectedWebhookList,
    RejectedWebhookOut,
    StatusChangeOut,
    WebhookLogDetail,
    WebhookLogList,
    WebhookLogOut,
)
from cryptocheckout.catalogue import repository as catalogue_repository
from cryptocheckout.catalogue import service as catalogue
from cryptocheckout.catalogue.schemas import (
    AdminProductOut,
    KeysAdded,
    KeysIn,
    ProductCreate,
    ProductUpdate,
)
from cryptocheckout.kit.db import read_only, unit_of_work
from cryptocheckout.kit.http import AppKeyRing, AppSettings, SessionMaker
from cryptocheckout.kit.jobs_models import JobStatus
from cryptocheckout.kit.problems import not_found
from cryptocheckout.kit.security import require_admin
from cryptocheckout.orders.models import OrderStatus
from cryptocheckout.orders.schemas import OrderOut, order_fields
from cryptocheckout.payments.models import PaymentStatus
from cryptocheckout.webhooks import processor
from cryptocheckout.webhooks import repository as webhook_logs
from cryptocheckout.webhooks.models import WebhookLog, WebhookLogStatus

router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@router.post("/products", status_code=201, response_model=AdminProductOut)
async def create_product(data: ProductCreate, sessionmaker: SessionMaker) -> AdminProductOut:
    async with unit_of_work(sessionmaker) as session:
        product = await catalogue.create_product(session, data)
        view = await catalogue.admin_view(session, product)
    return view


@router.patch("/products/{product_id}", response_model=AdminProductOut)
async def update_product(
    product_id: uuid.UUID, data: ProductUpdate, sessionmaker: SessionMaker
) -> AdminProductOut:
    async with unit_of_work(sessionmaker) as session:
        product = await catalogue.update_product(session, product_id, data)
        view = await catalogue.admin_view(session, product)
    return view


@router.get("/products", response_model=AdminProductList)
async def list_products(sessionmaker: SessionMaker) -> AdminProductList:
    """Every product, inactive ones too, each with its free `stock`."""
    async with read_only(sessionmaker) as session:
        return AdminProductList(items=await product_views(session))


@router.post("/products/{product_id}/keys", status_code=201, response_model=KeysAdded)
async def add_keys(
    product_id: uuid.UUID, data: KeysIn, sessionmaker: SessionMaker, ring: AppKeyRing
) -> KeysAdded:
    async with unit_of_work(sessionmaker) as session:
        added, duplicates = await service.import_keys(
            session, ring, product_id, data.keys, actor=service.API_ACTOR
        )
    return KeysAdded(added=added, duplicates=duplicates)


Limit = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=200)]
# PostgreSQL refuses NUL in text: control characters in a filter are a 422, never a 500.
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"


@router.get("/payments", response_model=AdminPaymentList)
async def list_payments(
    sessionmaker: SessionMaker,
    status: PaymentStatus | None = None,
    order_id: uuid.UUID | None = None,
    external_id: Annotated[str | None, Query(max_length=64, pattern=PRINTABLE)] = None,
    email: Annotated[str | None, Query(max_length=320, pattern=PRINTABLE)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> AdminPaymentList:
    async with read_only(sessionmaker) as session:
        rows, next_cursor = await repository.list_payments(
            session,
            status=status,
            order_id=order_id,
            external_id=external_id,
            email=email,
            limit=limit,
            cursor=cursor,
        )
    return AdminPaymentList(
        items=[AdminPayment.model_validate(row) for row in rows], next_cursor=next_cursor
    )


@router.get("/payments/{payment_id}", response_model=PaymentDetail)
async def get_payment(payment_id: uuid.UUID, sessionmaker: SessionMaker) -> PaymentDetail:
    async with read_only(sessionmaker) as session:
        found = await repository.payment_detail(session, payment_id)
        if found is None:
            raise not_found("payment")
        payment, order, timeline, notifications, jobs = found
        return PaymentDetail(
            **AdminPayment.model_validate(payment).model_dump(),
            order=OrderOut(**order_fields(order)),
            timeline=[StatusChangeOut.model_validate(change) for change in timeline],
            notifications=[WebhookLogOut.model_validate(log) for log in notifications],
            jobs=[JobOut.model_validate(job) for job in jobs],
        )


@router.get("/webhook-logs", response_model=WebhookLogList)
async def list_webhook_logs(
    sessionmaker: SessionMaker,
    provider: Annotated[str | None, Query(max_length=32, pattern=PRINTABLE)] = None,
    status: WebhookLogStatus | None = None,
    external_id: Annotated[str | None, Query(max_length=64, pattern=PRINTABLE)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> WebhookLogList:
    async with read_only(sessionmaker) as session:
        rows, next_cursor = await repository.list_webhook_logs(
            session,
            provider=provider,
            status=status,
            external_id=external_id,
            limit=limit,
            cursor=cursor,
        )
    return WebhookLogList(
        items=[WebhookLogOut.model_validate(row) for row in rows], next_cursor=next_cursor
    )


@router.get("/webhook-logs/{log_id}", response_model=WebhookLogDetail)
async def get_webhook_log(log_id: uuid.UUID, sessionmaker: SessionMaker) -> WebhookLogDetail:
    async with read_only(sessionmaker) as session:
        log = await webhook_logs.get(session, log_id)
    if log is None:
        raise not_found("webhook log")
    return WebhookLogDetail.model_validate(log)


@router.post("/webhook-logs/{log_id}/replay", response_model=WebhookLogDetail)
async def replay_webhook_log(
    log_id: uuid.UUID, sessionmaker: SessionMaker, settings: AppSettings
) -> WebhookLogDetail:
    """Runs the stored notification through the state machine again; idempotent."""
    log = await replay_notification(
        sessionmaker, log_id, settings.payment_tolerance_percent, actor=service.API_ACTOR
    )
    return WebhookLogDetail.model_validate(log)


@router.get("/rejected-webhooks", response_model=RejectedWebhookList)
async def list_rejected_webhooks(
    sessionmaker: SessionMaker, limit: Limit = 50, cursor: Cursor = None
) -> RejectedWebhookList:
    """Deliveries refused before storage: a misconfigured IPN secret shows up here."""
    async with read_only(sessionmaker) as session:
        rows, next_cursor = await repository.list_rejected(session, limit=limit, cursor=cursor)
    return RejectedWebhookList(
        items=[RejectedWebhookOut.model_validate(row) for row in rows], next_cursor=next_cursor
    )


@router.get("/jobs", response_model=JobList)
async def list_jobs(
    sessionmaker: SessionMaker,
    status: JobStatus | None = None,
    kind: Annotated[str | None, Query(max_length=64, pattern=PRINTABLE)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> JobList:
    """The job queue; `status=dead` lists what gave up and waits for staff."""
    async with read_only(sessionmaker) as session:
        rows, next_cursor = await repository.list_jobs(
            session, status=status, kind=kind, limit=limit, cursor=cursor
        )
    return JobList(items=[JobOut.model_validate(row) for row in rows], next_cursor=next_cursor)


@router.post("/jobs/{job_id}/retry", response_model=JobOut)
async def retry_job(job_id: uuid.UUID, sessionmaker: SessionMaker) -> JobOut:
    """A dead job runs again with a fresh set of attempts; any other job is left as it is."""
    async with unit_of_work(sessionmaker) as session:
        job = await service.retry_job(session, job_id, actor=service.API_ACTOR)
        return JobOut.model_validate(job)


@router.get("/orders", response_model=AdminOrderList)
async def list_orders(
    sessionmaker: SessionMaker,
    status: OrderStatus | None = None,
    email: Annotated[str | None, Query(max_length=320, pattern=PRINTABLE)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> AdminOrderList:
    async with read_only(sessionmaker) as session:
        rows, next_cursor = await repository.list_orders(
            session, status=status, email=email, limit=limit, cursor=cursor
        )
    return AdminOrderList(
        items=[OrderOut(**order_fields(order)) for order in rows], next_cursor=next_cursor
    )


@router.get("/orders/{order_id}", response_model=AdminOrderDetail)
async def get_order(order_id: uuid.UUID, sessionmaker: SessionMaker) -> AdminOrderDetail:
    async with read_only(sessionmaker) as session:
        return await order_view(session, order_id)


@router.post("/orders/{order_id}/mark-paid", response_model=AdminOrderDetail)
async def mark_paid(
    order_id: uuid.UUID, data: MarkPaidIn, sessionmaker: SessionMaker
) -> AdminOrderDetail:
    """An underpaid or flagged order becomes paid (cause `admin`, the reason as note) and is
    fulfilled by the worker; any other order is a 409."""
    async with unit_of_work(sessionmaker) as session:
        await service.mark_paid(session, order_id, data.reason, actor=service.API_ACTOR)
    async with read_only(sessionmaker) as session:
        return await order_view(session, order_id)


@router.post("/orders/{order_id}/resend-email", status_code=202, response_model=EmailQueued)
async def resend_email(order_id: uuid.UUID, sessionmaker: SessionMaker) -> EmailQueued:
    """A fresh delivery link mailed to the order's own address (fulfilled orders; else 409)."""
    async with unit_of_work(sessionmaker) as session:
        event = await service.resend_email(session, order_id, actor=service.API_ACTOR)
    return EmailQueued(order_id=order_id, event=event)


async def order_view(session: AsyncSession, order_id: uuid.UUID) -> AdminOrderDetail:
    found = await repository.order_detail(session, order_id)
    if found is None:
        raise not_found("order")
    return AdminOrderDetail(
        **order_fields(found.order),
        payments=[AdminPayment.model_validate(payment) for payment in found.payments],
        timeline=[StatusChangeOut.model_validate(change) for change in found.timeline],
        jobs=[JobOut.model_validate(job) for job in found.jobs],
        actions=[AdminActionOut.model_validate(action) for action in found.actions],
    )


async def product_views(session: AsyncSession) -> list[AdminProductOut]:
    products = await repository.list_products(session)
    stock = await catalogue_repository.stock(session, [product.id for product in products])
    return [
        AdminProductOut(
            id=product.id,
            sku=product.sku,
            name=product.name,
            price=product.price,
            currency=product.currency,
            in_stock=stock[product.id] > 0,
            active=product.active,
            stock=stock[product.id],
            created_at=product.created_at,
            updated_at=product.updated_at,
        )
        for product in products
    ]


async def replay_notification(
    sessionmaker: async_sessionmaker[AsyncSession],
    log_id: uuid.UUID,
    tolerance_percent: Decimal,
    *,
    actor: str,
    note: str | None = None,
) -> WebhookLog:
    """Replays a stored notification (it commits on its own), then records who asked."""
    log = await processor.replay(sessionmaker, log_id, tolerance_percent)
    if log is None:
        raise not_found("webhook log")
    async with unit_of_work(sessionmaker) as session:
        payment = (
            await repository.payment_by_external_id(session, log.external_id)
            if log.external_id
            else None
        )
        service.record(
            session,
            actor=actor,
            action="replay",
            subject="webhook_log",
            subject_id=log.id,
            order_id=payment.order_id if payment else None,
            note=note,
            outcome=f"{log.status.value}" + (f": {log.error}" if log.error else ""),
        )
    return log

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from cryptocheckout.admin import repository
from cryptocheckout.admin.schemas import (
    AdminPayment,
    AdminPaymentList,
    JobList,
    JobOut,
    PaymentDetail,
    RejectedWebhookList,
    RejectedWebhookOut,
    StatusChangeOut,
    WebhookLogDetail,
    WebhookLogList,
    WebhookLogOut,
)
from cryptocheckout.catalogue import service as catalogue
from cryptocheckout.catalogue.schemas import (
    AdminProductOut,
    KeysAdded,
    KeysIn,
    ProductCreate,
    ProductUpdate,
)
from cryptocheckout.fulfilment.handlers import wake_waiting_orders
from cryptocheckout.kit import jobs
from cryptocheckout.kit.db import read_only, unit_of_work
from cryptocheckout.kit.http import AppKeyRing, AppSettings, SessionMaker
from cryptocheckout.kit.jobs_models import Job, JobStatus
from cryptocheckout.kit.problems import not_found
from cryptocheckout.kit.security import require_admin
from cryptocheckout.orders.schemas import OrderOut, order_fields
from cryptocheckout.payments.models import PaymentStatus
from cryptocheckout.webhooks import processor
from cryptocheckout.webhooks import repository as webhook_logs
from cryptocheckout.webhooks.models import WebhookLogStatus

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


@router.post("/products/{product_id}/keys", status_code=201, response_model=KeysAdded)
async def add_keys(
    product_id: uuid.UUID, data: KeysIn, sessionmaker: SessionMaker, ring: AppKeyRing
) -> KeysAdded:
    async with unit_of_work(sessionmaker) as session:
        added, duplicates = await catalogue.add_keys(session, ring, product_id, data.keys)
        if added:
            await wake_waiting_orders(session)
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
    log = await processor.replay(sessionmaker, log_id, settings.payment_tolerance_percent)
    if log is None:
        raise not_found("webhook log")
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
        job: Job | None = await jobs.retry_dead(session, job_id)
        if job is None:
            raise not_found("job")
        return JobOut.model_validate(job)

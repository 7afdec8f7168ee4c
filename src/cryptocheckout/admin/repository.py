"""All SQL of the admin views."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from cryptocheckout.admin.pagination import page, split
from cryptocheckout.kit.jobs_models import Job, JobStatus
from cryptocheckout.orders.models import Order
from cryptocheckout.payments.models import Payment, PaymentStatus, StatusChange
from cryptocheckout.webhooks.models import RejectedWebhook, WebhookLog, WebhookLogStatus


async def list_payments(
    session: AsyncSession,
    *,
    status: PaymentStatus | None,
    order_id: uuid.UUID | None,
    external_id: str | None,
    email: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Payment], str | None]:
    query = select(Payment)
    if status is not None:
        query = query.where(Payment.status == status)
    if order_id is not None:
        query = query.where(Payment.order_id == order_id)
    if external_id is not None:
        query = query.where(Payment.external_id == external_id)
    if email is not None:
        query = query.join(Order, Order.id == Payment.order_id).where(
            func.lower(Order.email) == email.lower()
        )
    rows = list((await session.execute(page(query, Payment, limit, cursor))).scalars())
    return split(rows, limit)


async def payment_detail(
    session: AsyncSession, payment_id: uuid.UUID
) -> tuple[Payment, Order, Sequence[StatusChange], Sequence[WebhookLog], Sequence[Job]] | None:
    payment = await session.get(Payment, payment_id)
    if payment is None:
        return None
    order = (
        await session.execute(
            select(Order).where(Order.id == payment.order_id).options(selectinload(Order.items))
        )
    ).scalar_one()
    timeline = (
        (
            await session.execute(
                select(StatusChange)
                .where(StatusChange.order_id == order.id)
                .order_by(StatusChange.created_at, StatusChange.id)
            )
        )
        .scalars()
        .all()
    )
    notifications: Sequence[WebhookLog] = []
    if payment.external_id is not None:
        notifications = (
            (
                await session.execute(
                    select(WebhookLog)
                    .where(WebhookLog.external_id == payment.external_id)
                    .order_by(WebhookLog.created_at)
                )
            )
            .scalars()
            .all()
        )
    # The jobs of the order and of each of its payments (fulfilment, polls, mail).
    subjects = select(Payment.id).where(Payment.order_id == order.id)
    jobs = (
        (
            await session.execute(
                select(Job)
                .where(or_(Job.subject_id == order.id, Job.subject_id.in_(subjects)))
                .order_by(Job.created_at)
            )
        )
        .scalars()
        .all()
    )
    return payment, order, timeline, notifications, jobs


async def list_webhook_logs(
    session: AsyncSession,
    *,
    provider: str | None,
    status: WebhookLogStatus | None,
    external_id: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[WebhookLog], str | None]:
    query = select(WebhookLog)
    if provider is not None:
        query = query.where(WebhookLog.provider == provider)
    if status is not None:
        query = query.where(WebhookLog.status == status)
    if external_id is not None:
        query = query.where(WebhookLog.external_id == external_id)
    rows = list((await session.execute(page(query, WebhookLog, limit, cursor))).scalars())
    return split(rows, limit)


async def list_rejected(
    session: AsyncSession, *, limit: int, cursor: str | None
) -> tuple[list[RejectedWebhook], str | None]:
    query = select(RejectedWebhook)
    rows = list((await session.execute(page(query, RejectedWebhook, limit, cursor))).scalars())
    return split(rows, limit)


async def list_jobs(
    session: AsyncSession,
    *,
    status: JobStatus | None,
    kind: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Job], str | None]:
    query = select(Job)
    if status is not None:
        query = query.where(Job.status == status)
    if kind is not None:
        query = query.where(Job.kind == kind)
    rows = list((await session.execute(page(query, Job, limit, cursor))).scalars())
    return split(rows, limit)

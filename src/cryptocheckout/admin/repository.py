"""All SQL of the admin views."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from cryptocheckout.admin.models import AdminAction, AdminSession
from cryptocheckout.catalogue.models import Product
from cryptocheckout.kit.jobs_models import Job, JobStatus
from cryptocheckout.kit.pagination import page, split
from cryptocheckout.orders.models import Order, OrderStatus
from cryptocheckout.payments.models import Payment, PaymentStatus, StatusChange
from cryptocheckout.payments.state_machine import FULFIL_ORDER_JOB
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


async def list_products(session: AsyncSession) -> Sequence[Product]:
    """Every product, inactive ones too (a shop has tens, not millions: no pages)."""
    rows = await session.execute(select(Product).order_by(Product.name, Product.sku))
    return rows.scalars().all()


async def list_orders(
    session: AsyncSession,
    *,
    status: OrderStatus | None,
    email: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Order], str | None]:
    query = select(Order).options(selectinload(Order.items))
    if status is not None:
        query = query.where(Order.status == status)
    if email is not None:
        query = query.where(func.lower(Order.email) == email.lower())
    rows = list((await session.execute(page(query, Order, limit, cursor))).scalars())
    return split(rows, limit)


@dataclass(frozen=True)
class OrderDetail:
    order: Order
    payments: Sequence[Payment]
    timeline: Sequence[StatusChange]
    jobs: Sequence[Job]
    actions: Sequence[AdminAction]


async def order_detail(session: AsyncSession, order_id: uuid.UUID) -> OrderDetail | None:
    order = (
        await session.execute(
            select(Order).where(Order.id == order_id).options(selectinload(Order.items))
        )
    ).scalar_one_or_none()
    if order is None:
        return None
    payments = (
        (
            await session.execute(
                select(Payment).where(Payment.order_id == order_id).order_by(Payment.created_at)
            )
        )
        .scalars()
        .all()
    )
    timeline = (
        (
            await session.execute(
                select(StatusChange)
                .where(StatusChange.order_id == order_id)
                .order_by(StatusChange.created_at, StatusChange.id)
            )
        )
        .scalars()
        .all()
    )
    subjects = [order_id, *(payment.id for payment in payments)]
    jobs = (
        (
            await session.execute(
                select(Job).where(Job.subject_id.in_(subjects)).order_by(Job.created_at)
            )
        )
        .scalars()
        .all()
    )
    return OrderDetail(order, payments, timeline, jobs, await actions_of_order(session, order_id))


async def actions_of_order(session: AsyncSession, order_id: uuid.UUID) -> Sequence[AdminAction]:
    rows = await session.execute(
        select(AdminAction)
        .where(AdminAction.order_id == order_id)
        .order_by(AdminAction.created_at, AdminAction.id)
    )
    return rows.scalars().all()


async def actions_on(session: AsyncSession, subject_id: uuid.UUID) -> Sequence[AdminAction]:
    rows = await session.execute(
        select(AdminAction)
        .where(AdminAction.subject_id == subject_id)
        .order_by(AdminAction.created_at, AdminAction.id)
    )
    return rows.scalars().all()


async def order_id_of_subject(session: AsyncSession, subject_id: uuid.UUID) -> uuid.UUID | None:
    """The order a job's subject belongs to: the order itself, or a payment's order."""
    if await session.get(Order, subject_id) is not None:
        return subject_id
    payment = await session.get(Payment, subject_id)
    return payment.order_id if payment is not None else None


async def payment_by_external_id(session: AsyncSession, external_id: str) -> Payment | None:
    rows = await session.execute(select(Payment).where(Payment.external_id == external_id))
    return rows.scalar_one_or_none()


async def payments_of_order(session: AsyncSession, order_id: uuid.UUID) -> Sequence[Payment]:
    rows = await session.execute(
        select(Payment).where(Payment.order_id == order_id).order_by(Payment.created_at)
    )
    return rows.scalars().all()


# -- what needs attention (the console's home) ----------------------------------------------

ATTENTION_LIMIT = 20


async def flagged_payments(session: AsyncSession) -> Sequence[Payment]:
    rows = await session.execute(
        select(Payment)
        .where(Payment.needs_review.is_(True))
        .order_by(Payment.updated_at.desc())
        .limit(ATTENTION_LIMIT)
    )
    return rows.scalars().all()


async def underpaid_orders(session: AsyncSession) -> tuple[Sequence[Order], int]:
    """Orders whose payments fell short, newest first: pay the rest, or staff mark them paid."""
    query = select(Order).where(Order.status == OrderStatus.UNDERPAID)
    rows = await session.execute(
        query.order_by(Order.updated_at.desc(), Order.id.desc()).limit(ATTENTION_LIMIT)
    )
    return rows.scalars().all(), await count(session, query)


async def count(session: AsyncSession, query: Select[Any]) -> int:
    return int(
        (await session.execute(select(func.count()).select_from(query.subquery()))).scalar_one()
    )


async def dead_jobs(session: AsyncSession) -> tuple[Sequence[Job], int]:
    query = select(Job).where(Job.status == JobStatus.DEAD)
    rows = await session.execute(query.order_by(Job.updated_at.desc()).limit(ATTENTION_LIMIT))
    return rows.scalars().all(), await count(session, query)


async def failed_notifications(session: AsyncSession) -> tuple[Sequence[WebhookLog], int]:
    query = select(WebhookLog).where(WebhookLog.status == WebhookLogStatus.FAILED)
    rows = await session.execute(
        query.order_by(WebhookLog.created_at.desc()).limit(ATTENTION_LIMIT)
    )
    return rows.scalars().all(), await count(session, query)


async def paid_waiting_for_keys(session: AsyncSession) -> Sequence[tuple[Order, Job | None]]:
    """Paid, not yet fulfilled: with the fulfilment job that says why (keys short, mostly)."""
    rows = await session.execute(
        select(Order, Job)
        .outerjoin(Job, (Job.subject_id == Order.id) & (Job.kind == FULFIL_ORDER_JOB))
        .where(Order.status == OrderStatus.PAID)
        .order_by(Order.updated_at)
        .limit(ATTENTION_LIMIT)
    )
    return [(order, job) for order, job in rows.all()]


async def rejected_since(session: AsyncSession, since: datetime) -> dict[str, int]:
    """Deliveries refused since `since`, counted by reason."""
    rows = await session.execute(
        select(RejectedWebhook.reason, func.count())
        .where(RejectedWebhook.created_at >= since)
        .group_by(RejectedWebhook.reason)
    )
    return {reason: int(n) for reason, n in rows.all()}


# -- console sessions -------------------------------------------------------------------------


async def session_by_secret_hash(session: AsyncSession, secret_hash: str) -> AdminSession | None:
    rows = await session.execute(
        select(AdminSession).where(AdminSession.secret_hash == secret_hash)
    )
    return rows.scalar_one_or_none()


async def prune_sessions(session: AsyncSession, before: datetime) -> None:
    """Forget sessions that ended or expired before `before` (they sign nobody in)."""
    await session.execute(
        delete(AdminSession).where(
            or_(AdminSession.expires_at < before, AdminSession.ended_at < before)
        )
    )


async def notifications_of(
    session: AsyncSession, external_ids: Sequence[str]
) -> Sequence[WebhookLog]:
    """The stored notifications naming any of these NOWPayments payment ids, oldest first."""
    if not external_ids:
        return []
    rows = await session.execute(
        select(WebhookLog)
        .where(WebhookLog.external_id.in_(list(external_ids)))
        .order_by(WebhookLog.created_at, WebhookLog.id)
    )
    return rows.scalars().all()


async def get_job(session: AsyncSession, job_id: uuid.UUID) -> Job | None:
    return await session.get(Job, job_id)

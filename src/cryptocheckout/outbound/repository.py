"""All SQL of outbound webhooks."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.kit.dialects import dialect_name
from cryptocheckout.kit.jobs import ClaimedJob
from cryptocheckout.kit.jobs_models import Job, JobStatus
from cryptocheckout.kit.pagination import page, split
from cryptocheckout.outbound.models import WebhookDelivery, WebhookEndpoint


async def enabled_endpoints(session: AsyncSession) -> list[WebhookEndpoint]:
    rows = await session.execute(select(WebhookEndpoint).where(WebhookEndpoint.enabled.is_(True)))
    return list(rows.scalars())


async def get_endpoint(
    session: AsyncSession, endpoint_id: uuid.UUID, *, for_update: bool = False
) -> WebhookEndpoint | None:
    return await session.get(
        WebhookEndpoint, endpoint_id, with_for_update=for_update, populate_existing=for_update
    )


async def list_endpoints(
    session: AsyncSession, *, limit: int, cursor: str | None
) -> tuple[list[WebhookEndpoint], str | None]:
    rows = await session.execute(page(select(WebhookEndpoint), WebhookEndpoint, limit, cursor))
    return split(list(rows.scalars()), limit)


async def list_deliveries(
    session: AsyncSession, endpoint_id: uuid.UUID, *, limit: int, cursor: str | None
) -> tuple[list[WebhookDelivery], str | None]:
    query = select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
    rows = await session.execute(page(query, WebhookDelivery, limit, cursor))
    return split(list(rows.scalars()), limit)


async def get_delivery(
    session: AsyncSession, endpoint_id: uuid.UUID, delivery_id: uuid.UUID
) -> WebhookDelivery | None:
    delivery = await session.get(WebhookDelivery, delivery_id)
    if delivery is None or delivery.endpoint_id != endpoint_id:
        return None
    return delivery


async def job_payload(session: AsyncSession, dedupe_key: str) -> dict[str, Any] | None:
    rows = await session.execute(select(Job.payload).where(Job.dedupe_key == dedupe_key))
    payload: dict[str, Any] | None = rows.scalar_one_or_none()
    return payload


async def record_attempt(
    session: AsyncSession,
    delivery: WebhookDelivery,
    *,
    now: datetime,
    disable_after_seconds: float,
) -> bool:
    """Logs the attempt and keeps the endpoint's failure clock; True when it got disabled."""
    endpoint = await get_endpoint(session, delivery.endpoint_id, for_update=True)
    if endpoint is None:
        return False  # deleted meanwhile, and its log with it
    session.add(delivery)
    if delivery.succeeded:
        endpoint.failing_since = None
        return False
    if endpoint.failing_since is None:
        endpoint.failing_since = now
        return False
    failing_for = (now - endpoint.failing_since).total_seconds()
    if endpoint.enabled and failing_for >= disable_after_seconds:
        endpoint.enabled = False
        endpoint.disabled_reason = (
            f"disabled after failing without a success since {endpoint.failing_since.isoformat()}"
        )
        return True
    return False


async def prune_deliveries(session: AsyncSession, before: datetime) -> int:
    result = await session.execute(
        delete(WebhookDelivery).where(WebhookDelivery.created_at < before)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def _claimable(now: datetime) -> Any:
    # The same jobs `kit.jobs.claim` takes: due, or running with a lease that ran out.
    return or_(
        (Job.status == JobStatus.QUEUED) & (Job.run_at <= now),
        (Job.status == JobStatus.RUNNING)
        & (Job.lease_expires_at < now)
        & (Job.attempts < Job.max_attempts),
    )


async def claim_deliveries(
    session: AsyncSession,
    worker_id: str,
    *,
    kind: str,
    in_flight: Mapping[str, int],
    per_endpoint: int,
    limit: int,
    lease: timedelta,
    now: datetime,
) -> list[ClaimedJob]:
    """Claims up to `limit` due deliveries, at most `per_endpoint` in flight for any endpoint.

    `kit.jobs.claim` with endpoint-blind slots: an endpoint whose slots are all taken (by
    `in_flight`, this lane's running deliveries) is skipped in SQL, the others get what is
    left of theirs, so a dead endpoint's queue never fills the lane. Skipped jobs are not
    touched: they stay queued with their `run_at`. The caller commits.
    """
    if limit <= 0:
        return []
    endpoint_id = Job.payload["endpoint_id"].as_string()
    full = [key for key, count in in_flight.items() if count >= per_endpoint]
    candidates = select(Job.id, endpoint_id).where(Job.kind == kind, _claimable(now))
    if full:
        candidates = candidates.where(endpoint_id.not_in(full))
    # Enough rows to fill every free slot even when the first endpoints take few of them.
    candidates = candidates.order_by(Job.run_at).limit(limit * per_endpoint)
    if dialect_name(session) == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    taken: dict[str, int] = dict(in_flight)
    chosen: list[uuid.UUID] = []
    for job_id, endpoint in (await session.execute(candidates)).all():
        key = str(endpoint)
        if taken.get(key, 0) >= per_endpoint:
            continue
        taken[key] = taken.get(key, 0) + 1
        chosen.append(job_id)
        if len(chosen) >= limit:
            break
    if not chosen:
        return []
    rows = await session.execute(
        update(Job)
        .where(Job.id.in_(chosen), _claimable(now))
        .values(
            status=JobStatus.RUNNING,
            locked_by=worker_id,
            lease_expires_at=now + lease,
            attempts=Job.attempts + 1,
            updated_at=now,
        )
        .returning(Job.id, Job.kind, Job.payload, Job.attempts, Job.max_attempts)
    )
    return [ClaimedJob(*row) for row in rows.all()]

"""The worker side of notifications: apply each stored notification once, in order of arrival.

Each notification is applied in its own transaction holding its log row (`FOR UPDATE SKIP
LOCKED` on PostgreSQL, so several workers share the backlog), then the order and payment
rows, so notifications of one payment apply one after the other whichever workers take them.
A notification that fails is retried with backoff and ends `failed`, with the reason, for staff.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from decimal import Decimal

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.dialects import dialect_name
from cryptocheckout.kit.jobs import backoff
from cryptocheckout.kit.logsafe import FailureLog
from cryptocheckout.kit.metrics import REGISTRY
from cryptocheckout.payments.models import ChangeCause
from cryptocheckout.payments.notifications import Applied, Result, apply_notification
from cryptocheckout.webhooks.models import WebhookLog, WebhookLogStatus

logger = logging.getLogger("cryptocheckout.webhooks")
# During an outage every notification fails the same way: one line each, a traceback a minute.
failures = FailureLog(logger)

MAX_ATTEMPTS = 8
# The first retries come fast: the usual cause is a payment whose creation commits a moment
# after NOWPayments' first notification.
RETRY_BASE = timedelta(milliseconds=200)

APPLIED = REGISTRY.counter("cryptocheckout_ipn_applied_total", "Notifications applied, by result")


def _retry_delay(attempts: int) -> timedelta:
    delay: timedelta = min(RETRY_BASE * 2 ** (attempts - 1), backoff(attempts))
    return delay


async def _next_pending(session: AsyncSession) -> WebhookLog | None:
    now = utcnow()
    query = (
        select(WebhookLog)
        .where(
            WebhookLog.status == WebhookLogStatus.PENDING,
            or_(WebhookLog.next_attempt_at.is_(None), WebhookLog.next_attempt_at <= now),
        )
        .order_by(WebhookLog.created_at)
        .limit(1)
    )
    if dialect_name(session) == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return (await session.execute(query)).scalar_one_or_none()


def _record(log: WebhookLog, applied: Applied) -> None:
    log.attempts += 1
    now = utcnow()
    if applied.result is Result.RETRY and log.attempts < MAX_ATTEMPTS:
        log.next_attempt_at = now + _retry_delay(log.attempts)
        log.error = applied.detail
        return
    log.status = {
        Result.PROCESSED: WebhookLogStatus.PROCESSED,
        Result.FAILED: WebhookLogStatus.FAILED,
        Result.RETRY: WebhookLogStatus.FAILED,
    }[applied.result]
    log.error = applied.detail if applied.result in (Result.FAILED, Result.RETRY) else None
    log.processed_at = now
    log.next_attempt_at = None


async def process_next(sessionmaker: async_sessionmaker[AsyncSession], tolerance: Decimal) -> bool:
    """Applies the oldest due notification; False when there is none."""
    log_id: uuid.UUID | None = None
    try:
        async with sessionmaker() as session:
            log = await _next_pending(session)
            if log is None:
                return False
            log_id = log.id
            applied = await apply_notification(
                session, log, tolerance=tolerance, cause=ChangeCause.NOTIFICATION
            )
            _record(log, applied)
            await session.commit()
            APPLIED.inc(result=applied.result.value)
            return True
    except Exception as exc:
        if log_id is None:
            raise
        failures.failure(exc, "applying notification %s failed", log_id)
        await _record_error(sessionmaker, log_id, f"{type(exc).__name__}: {exc}")
        return True


async def _record_error(
    sessionmaker: async_sessionmaker[AsyncSession],
    log_id: uuid.UUID,
    error: str,
    *,
    reopen: bool = False,
) -> None:
    async with sessionmaker() as session:
        log = await session.get(WebhookLog, log_id, with_for_update=True)
        if log is None or (log.status is not WebhookLogStatus.PENDING and not reopen):
            return
        if reopen:  # an admin asked for it again: a fresh set of attempts for the worker
            log.status = WebhookLogStatus.PENDING
            log.attempts = 0
        _record(log, Applied(Result.RETRY, error[:4000]))
        await session.commit()


async def replay(
    sessionmaker: async_sessionmaker[AsyncSession], log_id: uuid.UUID, tolerance: Decimal
) -> WebhookLog | None:
    """Runs a stored notification through the state machine again (an admin repair).

    Idempotent: a replay of an applied notification finds nothing to change. If applying
    raises, the error is recorded on the log (which the worker then retries), not a 500.
    """
    try:
        async with sessionmaker() as session:
            log = await session.get(WebhookLog, log_id, with_for_update=True)
            if log is None:
                return None
            applied = await apply_notification(
                session, log, tolerance=tolerance, cause=ChangeCause.ADMIN
            )
            log.attempts = 0
            if applied.result is Result.RETRY:
                applied = Applied(Result.FAILED, applied.detail)
            _record(log, applied)
            await session.commit()
            return log
    except Exception as exc:
        failures.failure(exc, "replaying notification %s failed", log_id)
        await _record_error(sessionmaker, log_id, f"{type(exc).__name__}: {exc}", reopen=True)
        async with sessionmaker() as session:
            return await session.get(WebhookLog, log_id)

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

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.jobs import backoff
from cryptocheckout.kit.logsafe import FailureLog
from cryptocheckout.kit.metrics import REGISTRY
from cryptocheckout.nowpayments.errors import NowPaymentsPayloadError
from cryptocheckout.nowpayments.models import PaymentInfo, is_payment_notification, loads_exact
from cryptocheckout.payments.models import ChangeCause
from cryptocheckout.payments.notifications import Applied, Result, apply_provider_state
from cryptocheckout.webhooks import repository
from cryptocheckout.webhooks.models import WebhookLog, WebhookLogStatus

logger = logging.getLogger("cryptocheckout.webhooks")
# During an outage every notification fails the same way: one line each, a traceback a minute.
failures = FailureLog(logger)

# Enough for the retries to outlast a create call in flight (`payments.service.ABANDON_AFTER`).
MAX_ATTEMPTS = 10
# The first retries come fast: the usual cause is a payment whose creation commits a moment
# after NOWPayments' first notification.
RETRY_BASE = timedelta(milliseconds=200)

APPLIED = REGISTRY.counter("cryptocheckout_ipn_applied_total", "Notifications applied, by result")


def _retry_delay(attempts: int) -> timedelta:
    delay: timedelta = min(RETRY_BASE * 2 ** (attempts - 1), backoff(attempts))
    return delay


async def apply_stored(
    session: AsyncSession, log: WebhookLog, *, tolerance_percent: Decimal, cause: ChangeCause
) -> Applied:
    """Parses a stored notification's body and applies it; unusable content fails for good."""
    try:
        data = loads_exact(log.raw_body)
    except ValueError as exc:
        return Applied(Result.FAILED, f"invalid content: {exc}")
    if not is_payment_notification(data):
        return Applied(Result.FAILED, "not a payment notification (no payment_id/payment_status)")
    try:
        info = PaymentInfo.parse_mapping(data)
    except NowPaymentsPayloadError as exc:
        return Applied(Result.FAILED, f"invalid content: {exc}")
    return await apply_provider_state(
        session,
        info,
        tolerance_percent=tolerance_percent,
        cause=cause,
        ref=str(log.id),
        raw_payload=log.raw_payload,
    )


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


async def process_next(
    sessionmaker: async_sessionmaker[AsyncSession], tolerance_percent: Decimal
) -> bool:
    """Applies the oldest due notification; False when there is none."""
    log_id: uuid.UUID | None = None
    try:
        async with sessionmaker() as session:
            log = await repository.next_pending(session)
            if log is None:
                return False
            log_id = log.id
            applied = await apply_stored(
                session, log, tolerance_percent=tolerance_percent, cause=ChangeCause.NOTIFICATION
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
        log = await repository.lock(session, log_id)
        if log is None or (log.status is not WebhookLogStatus.PENDING and not reopen):
            return
        if reopen:  # an admin asked for it again: a fresh set of attempts for the worker
            log.status = WebhookLogStatus.PENDING
            log.attempts = 0
        _record(log, Applied(Result.RETRY, error[:4000]))
        await session.commit()


async def replay(
    sessionmaker: async_sessionmaker[AsyncSession], log_id: uuid.UUID, tolerance_percent: Decimal
) -> WebhookLog | None:
    """Runs a stored notification through the state machine again (an admin repair).

    Idempotent: a replay of an applied notification finds nothing to change. If applying
    raises, the error is recorded on the log (which the worker then retries), not a 500.
    """
    try:
        async with sessionmaker() as session:
            log = await repository.lock(session, log_id)
            if log is None:
                return None
            applied = await apply_stored(
                session, log, tolerance_percent=tolerance_percent, cause=ChangeCause.ADMIN
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
            return await repository.get(session, log_id)

"""A job queue in the service's own database: no broker to run, nothing lost on a crash.

A job is enqueued inside the transaction of whatever caused it (the transactional outbox), so
it exists exactly when its cause was committed. Workers claim due jobs with
`FOR UPDATE SKIP LOCKED` on PostgreSQL, so any number of them share the queue; on SQLite
every transaction takes the write lock up front, which makes a claim single-writer. A claim
holds a lease: a job whose worker died is claimed again once its lease has run out, so
handlers must be idempotent (and a handler's database effects commit together with the job's
completion). Failures back off exponentially with jitter (or as the handler's own schedule
says, `RetryAfter`); after `max_attempts` a job is dead and waits for staff.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.dialects import dialect_name, insert
from cryptocheckout.kit.jobs_models import Job, JobStatus
from cryptocheckout.kit.logsafe import FailureLog

logger = logging.getLogger("cryptocheckout.jobs")
failures = FailureLog(logger)

DEFAULT_LEASE = timedelta(seconds=60)
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 15 * 60.0

Handler = Callable[[AsyncSession, Mapping[str, Any]], Awaitable[None]]


class RetryLater(Exception):
    """Raised by a handler that is waiting for something (stock, say), not failing.

    The job backs off like a failure but never goes dead for it: a paid order must not be
    abandoned because keys ran out for a while.
    """


class GiveUp(Exception):
    """Raised by a handler whose job can never succeed (a mail server's 5xx refusal, say).

    The job ends dead at once, its reason in `last_error` for staff, instead of retrying.
    """


class RetryAfter(Exception):
    """Raised by a handler that keeps its own retry schedule (outbound webhooks, say).

    `delay(attempts)` is the wait before the next attempt, given the attempts made so far;
    the job still goes dead after `max_attempts`.
    """

    def __init__(self, reason: str, delay: Callable[[int], timedelta]) -> None:
        super().__init__(reason)
        self.delay = delay


async def enqueue(
    session: AsyncSession,
    kind: str,
    payload: Mapping[str, Any],
    *,
    subject_id: uuid.UUID | None = None,
    dedupe_key: str | None = None,
    run_at: datetime | None = None,
    max_attempts: int = 10,
) -> bool:
    """Adds a job in the caller's transaction; False when `dedupe_key` was enqueued before."""
    now = utcnow()
    statement = (
        insert(session, Job)
        .values(
            id=uuid.uuid4(),
            kind=kind,
            payload=dict(payload),
            subject_id=subject_id,
            status=JobStatus.QUEUED,
            dedupe_key=dedupe_key,
            attempts=0,
            max_attempts=max_attempts,
            run_at=run_at or now,
            created_at=now,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(Job.id)
    )
    return (await session.execute(statement)).first() is not None


@dataclass(frozen=True)
class ClaimedJob:
    id: uuid.UUID
    kind: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int


def backoff(attempts: int) -> timedelta:
    """Exponential backoff with full jitter: a random delay up to base * 2^(attempts-1)."""
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0))
    return timedelta(seconds=random.uniform(ceiling / 2, ceiling))  # noqa: S311 - not security


async def claim(
    sessionmaker: async_sessionmaker[AsyncSession],
    worker_id: str,
    *,
    kinds: Sequence[str] | None = None,
    skip_kinds: Sequence[str] = (),
    limit: int = 1,
    lease: timedelta = DEFAULT_LEASE,
) -> list[ClaimedJob]:
    """Claims up to `limit` due jobs (or jobs whose lease ran out) and commits the claim.

    `kinds` and `skip_kinds` split the queue between lanes (outbound webhooks run apart, so a
    slow endpoint never holds up payments).
    """
    async with sessionmaker() as session:
        now = utcnow()
        # A job whose worker died with it on every attempt (it kills the process, say)
        # must end dead rather than be taken again forever.
        await session.execute(
            update(Job)
            .where(
                Job.status == JobStatus.RUNNING,
                Job.lease_expires_at < now,
                Job.attempts >= Job.max_attempts,
            )
            .values(
                status=JobStatus.DEAD,
                last_error="its worker stopped holding it on every attempt",
                finished_at=now,
                updated_at=now,
            )
        )
        due = select(Job.id).where(
            or_(
                (Job.status == JobStatus.QUEUED) & (Job.run_at <= now),
                (Job.status == JobStatus.RUNNING)
                & (Job.lease_expires_at < now)
                & (Job.attempts < Job.max_attempts),
            )
        )
        if kinds is not None:
            due = due.where(Job.kind.in_(kinds))
        if skip_kinds:
            due = due.where(Job.kind.not_in(skip_kinds))
        due = due.order_by(Job.run_at).limit(limit)
        if dialect_name(session) == "postgresql":
            due = due.with_for_update(skip_locked=True)
        ids = list((await session.execute(due)).scalars())
        if not ids:
            await session.commit()
            return []
        rows = await session.execute(
            update(Job)
            .where(Job.id.in_(ids))
            .values(
                status=JobStatus.RUNNING,
                locked_by=worker_id,
                lease_expires_at=now + lease,
                attempts=Job.attempts + 1,
                updated_at=now,
            )
            .returning(Job.id, Job.kind, Job.payload, Job.attempts, Job.max_attempts)
        )
        claimed = [ClaimedJob(*row) for row in rows.all()]
        await session.commit()
        return claimed


def _held_by(job: ClaimedJob, worker_id: str) -> Any:
    # A worker whose lease ran out may have lost the job to another; it must not touch it.
    return (Job.id == job.id) & (Job.locked_by == worker_id) & (Job.status == JobStatus.RUNNING)


async def mark_succeeded(session: AsyncSession, job: ClaimedJob, worker_id: str) -> bool:
    """In the handler's transaction: the job is done exactly when its effects commit."""
    now = utcnow()
    result = await session.execute(
        update(Job)
        .where(_held_by(job, worker_id))
        .values(
            status=JobStatus.SUCCEEDED,
            finished_at=now,
            updated_at=now,
            lease_expires_at=None,
            last_error=None,
        )
    )
    return bool(getattr(result, "rowcount", 0))


async def mark_failed(
    sessionmaker: async_sessionmaker[AsyncSession],
    job: ClaimedJob,
    worker_id: str,
    error: str,
    *,
    may_die: bool = True,
    dead_now: bool = False,
    retry_in: timedelta | None = None,
) -> JobStatus:
    dead = dead_now or (may_die and job.attempts >= job.max_attempts)
    now = utcnow()
    if retry_in is None:
        retry_in = backoff(min(job.attempts, job.max_attempts))
    status = JobStatus.DEAD if dead else JobStatus.QUEUED
    async with sessionmaker() as session:
        await session.execute(
            update(Job)
            .where(_held_by(job, worker_id))
            .values(
                status=status,
                run_at=now if dead else now + retry_in,
                lease_expires_at=None,
                locked_by=None,
                last_error=error[:4000],
                finished_at=now if dead else None,
                updated_at=now,
            )
        )
        await session.commit()
    return status


async def run_one(
    sessionmaker: async_sessionmaker[AsyncSession],
    job: ClaimedJob,
    worker_id: str,
    handlers: Mapping[str, Handler],
) -> JobStatus:
    """Runs a claimed job: its effects and its completion commit in one transaction."""
    handler = handlers.get(job.kind)
    try:
        if handler is None:
            raise LookupError(f"no handler for job kind {job.kind!r}")
        async with sessionmaker() as session:
            await handler(session, job.payload)
            if not await mark_succeeded(session, job, worker_id):
                # Lease lost to another worker: drop our effects, theirs will count.
                await session.rollback()
                logger.warning("job %s lost its lease before finishing", job.id)
                return JobStatus.RUNNING
            await session.commit()
        return JobStatus.SUCCEEDED
    except RetryLater as exc:
        logger.info("job %s (%s) waits: %s", job.id, job.kind, exc)
        return await mark_failed(
            sessionmaker, job, worker_id, f"{type(exc).__name__}: {exc}", may_die=False
        )
    except GiveUp as exc:
        logger.warning("job %s (%s) gave up: %s", job.id, job.kind, exc)
        return await mark_failed(
            sessionmaker, job, worker_id, f"{type(exc).__name__}: {exc}", dead_now=True
        )
    except RetryAfter as exc:
        logger.info("job %s (%s) failed on attempt %d: %s", job.id, job.kind, job.attempts, exc)
        return await mark_failed(
            sessionmaker, job, worker_id, str(exc), retry_in=exc.delay(job.attempts)
        )
    except Exception as exc:
        failures.failure(exc, "job %s (%s) failed on attempt %d", job.id, job.kind, job.attempts)
        return await mark_failed(sessionmaker, job, worker_id, f"{type(exc).__name__}: {exc}")


async def run_soon(session: AsyncSession, kind: str) -> int:
    """Makes the queued jobs of `kind` due now (e.g. fulfilment once keys were added)."""
    result = await session.execute(
        update(Job)
        .where(Job.kind == kind, Job.status == JobStatus.QUEUED)
        .values(run_at=utcnow(), updated_at=utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def retry_dead(session: AsyncSession, job_id: uuid.UUID) -> Job | None:
    """Staff's repair: a dead job gets a fresh set of attempts."""
    job = await session.get(Job, job_id, with_for_update=True)
    if job is None:
        return None
    if job.status is JobStatus.DEAD:
        now = utcnow()
        job.status = JobStatus.QUEUED
        job.attempts = 0
        job.run_at = now
        job.finished_at = None
        job.updated_at = now
    return job

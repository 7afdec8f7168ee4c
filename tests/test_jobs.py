"""The job queue in the database: outbox enqueue, claims, leases, backoff, dead jobs."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cryptocheckout.kit import jobs
from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.jobs_models import Job, JobStatus

Sessions = async_sessionmaker[AsyncSession]


async def _enqueue(sessionmaker: Sessions, **kwargs: Any) -> bool:
    async with sessionmaker() as session:
        added = await jobs.enqueue(session, "test", {"n": 1}, **kwargs)
        await session.commit()
        return added


async def _job(sessionmaker: Sessions) -> Job:
    async with sessionmaker() as session:
        return (await session.execute(select(Job))).scalar_one()


async def test_enqueue_is_part_of_the_callers_transaction(sessionmaker: Sessions) -> None:
    async with sessionmaker() as session:
        await jobs.enqueue(session, "test", {"n": 1})
        await session.rollback()
    assert await jobs.claim(sessionmaker, "w1") == []


async def test_dedupe_key_allows_one_job_ever(sessionmaker: Sessions) -> None:
    assert await _enqueue(sessionmaker, dedupe_key="fulfil_order:1")
    assert not await _enqueue(sessionmaker, dedupe_key="fulfil_order:1")
    assert len(await jobs.claim(sessionmaker, "w1", limit=10)) == 1


async def test_a_claimed_job_is_not_claimed_twice_until_its_lease_ends(
    sessionmaker: Sessions,
) -> None:
    await _enqueue(sessionmaker)
    [job] = await jobs.claim(sessionmaker, "w1", lease=timedelta(seconds=30))
    assert job.attempts == 1
    assert await jobs.claim(sessionmaker, "w2") == []
    async with sessionmaker() as session:
        await session.execute(update(Job).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        await session.commit()
    [again] = await jobs.claim(sessionmaker, "w2")
    assert again.id == job.id and again.attempts == 2
    # the first worker lost the job: it can neither complete nor fail it any more
    async with sessionmaker() as session:
        assert not await jobs.mark_succeeded(session, job, "w1")
        await session.commit()
    assert (await _job(sessionmaker)).locked_by == "w2"


async def test_handler_effects_and_completion_commit_together(sessionmaker: Sessions) -> None:
    await _enqueue(sessionmaker)
    seen: list[Mapping[str, Any]] = []

    async def handler(session: AsyncSession, payload: Mapping[str, Any]) -> None:
        seen.append(payload)

    [job] = await jobs.claim(sessionmaker, "w1")
    assert await jobs.run_one(sessionmaker, job, "w1", {"test": handler}) is JobStatus.SUCCEEDED
    stored = await _job(sessionmaker)
    assert stored.status is JobStatus.SUCCEEDED and stored.finished_at is not None
    assert seen == [{"n": 1}]


async def test_failures_back_off_then_die(sessionmaker: Sessions) -> None:
    await _enqueue(sessionmaker, max_attempts=3)

    async def broken(session: AsyncSession, payload: Mapping[str, Any]) -> None:
        raise RuntimeError("smtp down")

    statuses = []
    for _ in range(3):
        async with sessionmaker() as session:
            await session.execute(update(Job).values(run_at=utcnow() - timedelta(seconds=1)))
            await session.commit()
        [job] = await jobs.claim(sessionmaker, "w1")
        before = utcnow()
        statuses.append(await jobs.run_one(sessionmaker, job, "w1", {"test": broken}))
        stored = await _job(sessionmaker)
        if stored.status is JobStatus.QUEUED:
            assert stored.run_at > before  # backed off
    assert statuses == [JobStatus.QUEUED, JobStatus.QUEUED, JobStatus.DEAD]
    stored = await _job(sessionmaker)
    assert stored.status is JobStatus.DEAD and stored.attempts == 3
    assert "smtp down" in (stored.last_error or "")
    assert await jobs.claim(sessionmaker, "w1") == []


async def test_unknown_kind_fails_visibly(sessionmaker: Sessions) -> None:
    await _enqueue(sessionmaker, max_attempts=1)
    [job] = await jobs.claim(sessionmaker, "w1")
    assert await jobs.run_one(sessionmaker, job, "w1", {}) is JobStatus.DEAD
    assert "no handler" in ((await _job(sessionmaker)).last_error or "")


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    first = [jobs.backoff(1).total_seconds() for _ in range(50)]
    fifth = [jobs.backoff(5).total_seconds() for _ in range(50)]
    huge = jobs.backoff(60).total_seconds()
    assert all(0.5 <= d <= 1.0 for d in first)
    assert all(8 <= d <= 16 for d in fifth)
    assert len(set(fifth)) > 1
    assert huge <= jobs.BACKOFF_CAP_SECONDS


async def test_waiting_for_something_never_kills_a_job(sessionmaker: Sessions) -> None:
    await _enqueue(sessionmaker, max_attempts=2)

    async def waiting(session: AsyncSession, payload: Mapping[str, Any]) -> None:
        raise jobs.RetryLater("no keys yet")

    for _ in range(4):
        async with sessionmaker() as session:
            await session.execute(update(Job).values(run_at=utcnow() - timedelta(seconds=1)))
            await session.commit()
        [job] = await jobs.claim(sessionmaker, "w1")
        assert await jobs.run_one(sessionmaker, job, "w1", {"test": waiting}) is JobStatus.QUEUED
    assert (await _job(sessionmaker)).attempts == 4


async def test_giving_up_ends_the_job_dead_at_once_with_the_reason(
    sessionmaker: Sessions,
) -> None:
    await _enqueue(sessionmaker, max_attempts=10)

    async def refused(session: AsyncSession, payload: Mapping[str, Any]) -> None:
        raise jobs.GiveUp("SMTP 550: the server refused the recipient")

    [job] = await jobs.claim(sessionmaker, "w1")
    assert await jobs.run_one(sessionmaker, job, "w1", {"test": refused}) is JobStatus.DEAD
    dead = await _job(sessionmaker)
    assert dead.attempts == 1 and dead.finished_at is not None
    assert dead.last_error == "GiveUp: SMTP 550: the server refused the recipient"


async def test_staff_can_retry_a_dead_job(sessionmaker: Sessions) -> None:
    await _enqueue(sessionmaker, max_attempts=1)
    [job] = await jobs.claim(sessionmaker, "w1")
    assert await jobs.run_one(sessionmaker, job, "w1", {}) is JobStatus.DEAD
    async with sessionmaker() as session:
        revived = await jobs.retry_dead(session, job.id)
        await session.commit()
    assert revived is not None and revived.status is JobStatus.QUEUED and revived.attempts == 0
    assert len(await jobs.claim(sessionmaker, "w1")) == 1


async def test_a_job_whose_worker_always_dies_ends_dead(sessionmaker: Sessions) -> None:
    await _enqueue(sessionmaker, max_attempts=2)
    for expected in (1, 2):
        [job] = await jobs.claim(sessionmaker, f"w{expected}")
        assert job.attempts == expected
        async with sessionmaker() as session:  # the worker dies: its lease runs out
            await session.execute(
                update(Job).values(lease_expires_at=utcnow() - timedelta(seconds=1))
            )
            await session.commit()
    assert await jobs.claim(sessionmaker, "w3") == []
    stored = await _job(sessionmaker)
    assert stored.status is JobStatus.DEAD and "stopped holding" in (stored.last_error or "")


async def test_a_handler_with_its_own_schedule_sets_the_next_run_and_still_dies(
    sessionmaker: Sessions,
) -> None:
    async def later(_session: AsyncSession, _payload: Mapping[str, Any]) -> None:
        raise jobs.RetryAfter("endpoint answered 500", lambda attempts: timedelta(hours=attempts))

    await _enqueue(sessionmaker, max_attempts=2)
    [job] = await jobs.claim(sessionmaker, "w1")
    before = utcnow()
    assert await jobs.run_one(sessionmaker, job, "w1", {"test": later}) is JobStatus.QUEUED
    stored = await _job(sessionmaker)
    assert before + timedelta(hours=1) <= stored.run_at <= utcnow() + timedelta(hours=1)
    assert stored.last_error == "endpoint answered 500"
    async with sessionmaker() as session:
        await session.execute(update(Job).values(run_at=utcnow()))
        await session.commit()
    [job] = await jobs.claim(sessionmaker, "w1")
    assert await jobs.run_one(sessionmaker, job, "w1", {"test": later}) is JobStatus.DEAD


async def test_lanes_split_the_queue_by_kind(sessionmaker: Sessions) -> None:
    async with sessionmaker() as session:
        await jobs.enqueue(session, "test", {})
        await jobs.enqueue(session, "slow", {})
        await session.commit()
    [main] = await jobs.claim(sessionmaker, "w1", skip_kinds=["slow"], limit=10)
    assert main.kind == "test"
    assert await jobs.claim(sessionmaker, "w1", skip_kinds=["slow"], limit=10) == []
    [lane] = await jobs.claim(sessionmaker, "w2", kinds=["slow"], limit=10)
    assert lane.kind == "slow"

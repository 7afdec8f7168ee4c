"""kill -9 of a worker around the SMTP send, on PostgreSQL with real worker processes.

The mail job sends, then completes in the same transaction as nothing else: a worker killed
after the server accepted the message and before that commit leaves the job to run again
once its lease runs out, so the message is sent at least once and at most once more per
crash. These tests pin both sides of that window with a real SMTP server on loopback.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cryptocheckout.delivery.jobs import SEND_ORDER_EMAIL_JOB, enqueue_order_email
from cryptocheckout.kit.jobs_models import Job, JobStatus
from tests.support.shop import paying_order
from tests.support.smtp import Inbox, smtp_server

pytestmark = pytest.mark.parametrize("dialect", ["postgresql"], indirect=True)

Sessions = async_sessionmaker[AsyncSession]


class HeldInbox(Inbox):
    """Holds the first DATA until released: before or after keeping the message."""

    def __init__(self, keep_before_holding: bool) -> None:
        super().__init__()
        self.keep_before_holding = keep_before_holding
        self.holding = threading.Event()
        self.release = threading.Event()
        self.held_once = False

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.held_once:
            return await super().handle_DATA(server, session, envelope)
        self.held_once = True
        if self.keep_before_holding:
            await super().handle_DATA(server, session, envelope)
        self.holding.set()
        while not self.release.is_set():
            await asyncio.sleep(0.05)
        return "451 4.3.0 the client went away"


def _worker(database_url: str, smtp_port: int, lease_seconds: float) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CRYPTOCHECKOUT_MODE": "test",
        "NOWPAYMENTS_API_KEY": "k",
        "NOWPAYMENTS_IPN_SECRET": "s",
        "SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
        "MAIL_FROM": "Shop <shop@example.com>",
        "WORKER_POLL_SECONDS": "0.02",
        "JOB_LEASE_SECONDS": str(lease_seconds),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "cryptocheckout", "worker"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _mail_job(sessionmaker: Sessions) -> Job:
    async with sessionmaker() as session:
        job: Job = (
            await session.execute(select(Job).where(Job.kind == SEND_ORDER_EMAIL_JOB))
        ).scalar_one()
        return job


async def _until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("accepted_before_the_kill", "messages"),
    [(False, 1), (True, 2)],
    ids=["killed-before-the-server-accepted", "killed-after-the-server-accepted"],
)
async def test_a_worker_killed_during_the_send_leaves_the_mail_to_the_next(
    sessionmaker: Sessions, database_url: str, accepted_before_the_kill: bool, messages: int
) -> None:
    paying = await paying_order(sessionmaker)
    async with sessionmaker() as session:
        await enqueue_order_email(session, paying.order_id, "expired")
        await session.commit()
    inbox = HeldInbox(keep_before_holding=accepted_before_the_kill)
    with smtp_server(inbox=inbox) as (_, port):
        doomed = _worker(database_url, port, lease_seconds=2)
        try:
            held = await asyncio.to_thread(inbox.holding.wait, 30)
            assert held, "the worker never reached the SMTP conversation"
            doomed.send_signal(signal.SIGKILL)
            doomed.wait(timeout=10)
        finally:
            if doomed.poll() is None:
                doomed.kill()
        inbox.release.set()
        job = await _mail_job(sessionmaker)
        assert job.status is JobStatus.RUNNING and job.attempts == 1  # held by a dead worker
        heir = _worker(database_url, port, lease_seconds=2)
        try:

            async def sent() -> bool:
                return (await _mail_job(sessionmaker)).status is JobStatus.SUCCEEDED

            await _until(sent)
        finally:
            heir.send_signal(signal.SIGTERM)
            heir.wait(timeout=10)
    job = await _mail_job(sessionmaker)
    assert job.attempts == 2
    # Before the server accepted: exactly one message. After: the one duplicate per crash.
    assert len(inbox.received) == messages
    assert {r.recipients[0] for r in inbox.received} == {"buyer@example.com"}

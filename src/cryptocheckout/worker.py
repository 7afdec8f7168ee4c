"""The background worker: applies stored notifications and runs due jobs.

Any number of workers may run against one PostgreSQL database (`cryptocheckout worker`),
and `cryptocheckout serve` runs one in-process. An idle worker polls every `poll_interval`
seconds; in-process it is also woken at once when a notification has been stored.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cryptocheckout.catalogue import repository as catalogue
from cryptocheckout.config import Settings
from cryptocheckout.delivery.jobs import email_on_order_event
from cryptocheckout.delivery.wiring import mail_job_handlers
from cryptocheckout.fulfilment.handlers import JOB_HANDLERS as FULFILMENT_JOBS
from cryptocheckout.kit import jobs
from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.db import create_engine, create_sessionmaker, unit_of_work
from cryptocheckout.kit.encryption import keyring_of
from cryptocheckout.kit.idempotency import purge_expired
from cryptocheckout.kit.logsafe import FailureLog
from cryptocheckout.kit.runtime import freeze_startup_heap
from cryptocheckout.nowpayments.client import NowPaymentsClient
from cryptocheckout.outbound import service as outbound
from cryptocheckout.outbound.sender import DeliveryLane
from cryptocheckout.payments import reconcile
from cryptocheckout.payments.events import ORDER_EVENT_JOB, Reaction, order_event_handler
from cryptocheckout.webhooks.processor import process_next

logger = logging.getLogger("cryptocheckout.worker")
# A database outage fails every round alike: one line per round, a traceback once a minute.
failures = FailureLog(logger)

# Jobs that need nothing but the database; those that call NOWPayments join with a client.
HANDLERS: dict[str, jobs.Handler] = {**FULFILMENT_JOBS}
PURGE_EVERY_SECONDS = 600.0
POLL_SCAN_EVERY_SECONDS = 60.0
RELEASE_HOLDS_EVERY_SECONDS = 30.0


class Lane(Protocol):
    """Jobs of some kinds run apart from the main loop, e.g. webhooks that may be slow."""

    kinds: tuple[str, ...]

    async def run(self, stop: asyncio.Event) -> None: ...


class Worker:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        tolerance_percent: Decimal = Decimal(0),
        poll_interval: float = 0.1,
        lease: timedelta = jobs.DEFAULT_LEASE,
        handlers: dict[str, jobs.Handler] | None = None,
        batch: int = 20,
        client: NowPaymentsClient | None = None,
        reconcile_after: timedelta | None = None,
        reactions: Sequence[Reaction] = (),
        lanes: Sequence[Lane] = (),
    ) -> None:
        self.sessionmaker = sessionmaker
        self.tolerance_percent = tolerance_percent
        self.poll_interval = poll_interval
        self.handlers = dict(handlers if handlers is not None else HANDLERS)
        # Order events fan out to the reactions of the packages above payments.
        self.handlers.setdefault(ORDER_EVENT_JOB, order_event_handler(reactions))
        if client is not None:
            self.handlers.update(reconcile.job_handlers(client, tolerance_percent))
        # With a client, open payments quiet for this long are polled at NOWPayments.
        self.reconcile_after = reconcile_after if client is not None else None
        self.lanes = list(lanes)
        self.batch = batch
        self.lease = lease
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.wakeup = asyncio.Event()

    def wake(self) -> None:
        self.wakeup.set()

    async def run_once(self) -> int:
        """One round: up to `batch` notifications, then up to `batch` jobs. Returns work done."""
        done = 0
        for _ in range(self.batch):
            if not await process_next(self.sessionmaker, self.tolerance_percent):
                break
            done += 1
        lane_kinds = [kind for lane in self.lanes for kind in lane.kinds]
        for job in await jobs.claim(
            self.sessionmaker,
            self.worker_id,
            skip_kinds=lane_kinds,
            limit=self.batch,
            lease=self.lease,
        ):
            await jobs.run_one(self.sessionmaker, job, self.worker_id, self.handlers)
            done += 1
        return done

    async def purge(self) -> None:
        """Drops idempotency keys past their 24 hours."""
        async with unit_of_work(self.sessionmaker) as session:
            purged = await purge_expired(session)
        if purged:
            logger.info("purged %d expired idempotency keys", purged)

    async def scan_for_polls(self) -> None:
        if self.reconcile_after is None:
            return
        async with unit_of_work(self.sessionmaker) as session:
            added = await reconcile.enqueue_stale_polls(session, quiet_for=self.reconcile_after)
        if added:
            logger.info("asking NOWPayments about %d quiet payments", added)

    async def release_holds(self) -> None:
        """Gives lapsed stock holds back to the shop (checkouts ignore them already)."""
        async with unit_of_work(self.sessionmaker) as session:
            released = await catalogue.release_lapsed_holds(session, utcnow())
        if released:
            logger.info("released %d lapsed stock holds", released)

    async def housekeeping(self, now: float, due: dict[str, float]) -> None:
        for name, every, task in (
            ("purge", PURGE_EVERY_SECONDS, self.purge),
            ("polls", POLL_SCAN_EVERY_SECONDS, self.scan_for_polls),
            ("holds", RELEASE_HOLDS_EVERY_SECONDS, self.release_holds),
        ):
            if now < due.get(name, 0.0):
                continue
            due[name] = now + every
            try:
                await task()
            except Exception as exc:
                failures.failure(exc, "housekeeping (%s) failed", name)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        logger.info("worker %s started", self.worker_id)
        due: dict[str, float] = {}
        lanes = [asyncio.create_task(lane.run(stop)) for lane in self.lanes]
        while not stop.is_set():
            await self.housekeeping(time.monotonic(), due)
            try:
                done = await self.run_once()
            except Exception as exc:
                # The database may be restarting: keep the worker alive and try again.
                failures.failure(exc, "worker round failed")
                done = 0
            if done:
                continue
            self.wakeup.clear()
            waiters = [
                asyncio.ensure_future(self.wakeup.wait()),
                asyncio.ensure_future(stop.wait()),
            ]
            await asyncio.wait(
                waiters, timeout=self.poll_interval, return_when=asyncio.FIRST_COMPLETED
            )
            for waiter in waiters:
                waiter.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)
        logger.info("worker %s stopped", self.worker_id)


async def run_standalone(settings: Settings) -> None:
    """`cryptocheckout worker`: a worker process until SIGINT/SIGTERM."""
    import signal

    engine = create_engine(settings.database_url, **settings.engine_options())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    client = nowpayments_client(settings)
    try:
        worker = worker_from_settings(create_sessionmaker(engine), settings, client)
        freeze_startup_heap()
        await worker.run(stop)
    finally:
        await client.aclose()
        await engine.dispose()


def worker_from_settings(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    client: NowPaymentsClient | None = None,
) -> Worker:
    ring = keyring_of(settings)
    return Worker(
        sessionmaker,
        handlers={**HANDLERS, **mail_job_handlers(settings, ring)},
        reactions=[email_on_order_event, outbound.react],
        tolerance_percent=settings.payment_tolerance_percent,
        poll_interval=settings.worker_poll_seconds,
        lease=timedelta(seconds=settings.job_lease_seconds),
        client=client,
        reconcile_after=timedelta(seconds=settings.reconcile_after_seconds),
        lanes=[DeliveryLane.from_settings(sessionmaker, settings)],
    )


def nowpayments_client(settings: Settings) -> NowPaymentsClient:
    return NowPaymentsClient(
        settings.nowpayments_base,
        settings.nowpayments_api_key.get_secret_value(),
        email=settings.nowpayments_email,
        password=settings.nowpayments_password.get_secret_value(),
    )

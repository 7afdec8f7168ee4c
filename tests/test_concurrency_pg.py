"""The committing concurrency tier, on PostgreSQL: real worker processes, real races, kill -9.

Each test runs twice (`route`): the service's processes connect directly, then through a
PgBouncer in transaction mode with `DATABASE_POOLED=true`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cryptocheckout.app import create_app
from cryptocheckout.catalogue.models import LicenceKey
from cryptocheckout.config import Settings
from cryptocheckout.kit.jobs_models import Job, JobStatus
from cryptocheckout.orders.models import Order, OrderStatus
from cryptocheckout.payments.models import StatusChange
from cryptocheckout.payments.state_machine import FULFIL_ORDER_JOB
from cryptocheckout.webhooks.models import WebhookLog, WebhookLogStatus
from cryptocheckout.webhooks.processor import process_next
from tests.conftest import Route
from tests.support.ipn import ipn_payload, signed
from tests.support.servers import serve_in_thread
from tests.support.shop import Paying, paying_order

pytestmark = pytest.mark.parametrize("dialect", ["postgresql"], indirect=True)

SECRET = "test-ipn-secret"
Sessions = async_sessionmaker[AsyncSession]


@contextmanager
def workers(
    route: Route, count: int, lease_seconds: float = 60.0
) -> Iterator[list[subprocess.Popen[bytes]]]:
    env = {
        **os.environ,
        **route.env(),
        "CRYPTOCHECKOUT_MODE": "test",
        "NOWPAYMENTS_API_KEY": "k",
        "NOWPAYMENTS_IPN_SECRET": SECRET,
        "WORKER_POLL_SECONDS": "0.02",
        "JOB_LEASE_SECONDS": str(lease_seconds),
    }
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "cryptocheckout", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(count)
    ]
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


async def _wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached in time")


async def _order_status(sessionmaker: Sessions, paying: Paying) -> OrderStatus:
    async with sessionmaker() as session:
        order = await session.get(Order, paying.order_id)
        assert order is not None
        return order.status


async def _count(sessionmaker: Sessions, model: Any, *where: Any) -> int:
    async with sessionmaker() as session:
        return int(
            (
                await session.execute(select(func.count()).select_from(model).where(*where))
            ).scalar_one()
        )


def _finished(paying: Paying, updated_at: int = 1) -> tuple[bytes, dict[str, str]]:
    payload = ipn_payload(
        paying.external_id or "",
        "finished",
        order_id=str(paying.order_id),
        price_amount=paying.price,
        pay_amount=paying.pay_amount,
        actually_paid=paying.pay_amount,
        updated_at=updated_at,
    )
    return signed(payload, SECRET)


async def _post_all(base: str, requests: list[tuple[bytes, dict[str, str]]]) -> list[int]:
    limits = httpx.Limits(max_connections=len(requests))
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=30) as client:
        responses = await asyncio.gather(
            *(client.post("/api/webhooks/nowpayments", content=b, headers=h) for b, h in requests)
        )
    return [r.status_code for r in responses]


async def _assert_paid_once(sessionmaker: Sessions, paying: Paying) -> None:
    await _wait_for(lambda: _is_fulfilled(sessionmaker, paying))
    assert (
        await _count(
            sessionmaker,
            StatusChange,
            StatusChange.order_id == paying.order_id,
            StatusChange.to_status == "paid",
        )
        == 1
    )
    assert await _count(sessionmaker, Job, Job.kind == FULFIL_ORDER_JOB) == 1
    assert await _count(sessionmaker, LicenceKey, LicenceKey.order_id == paying.order_id) == 1


async def _is_fulfilled(sessionmaker: Sessions, paying: Paying) -> bool:
    return await _order_status(sessionmaker, paying) is OrderStatus.FULFILLED


@pytest.mark.stores_notifications
async def test_fifty_concurrent_deliveries_with_two_workers_pay_once(
    settings: Settings, sessionmaker: Sessions, route: Route
) -> None:
    paying = await paying_order(sessionmaker)
    with serve_in_thread(create_app(route.settings(settings))) as base, workers(route, 2):
        statuses = await _post_all(base, [_finished(paying)] * 50)
        assert statuses == [200] * 50
        await _assert_paid_once(sessionmaker, paying)
    async with sessionmaker() as session:
        [log] = (await session.execute(select(WebhookLog))).scalars().all()
    assert log.deliveries == 50
    assert log.status is WebhookLogStatus.PROCESSED


@pytest.mark.stores_notifications
async def test_fifty_distinct_finished_notifications_race_on_two_workers(
    settings: Settings, sessionmaker: Sessions, route: Route
) -> None:
    paying = await paying_order(sessionmaker)
    # Distinct bodies (resent by hand, say): fifty log rows the two workers apply at once.
    requests = [_finished(paying, updated_at=i) for i in range(50)]
    with serve_in_thread(create_app(route.settings(settings))) as base, workers(route, 2):
        assert await _post_all(base, requests) == [200] * 50
        await _assert_paid_once(sessionmaker, paying)

        async def all_applied() -> bool:
            pending = await _count(
                sessionmaker, WebhookLog, WebhookLog.status == WebhookLogStatus.PENDING
            )
            return pending == 0

        await _wait_for(all_applied)
    async with sessionmaker() as session:
        statuses = (await session.execute(select(WebhookLog.status))).scalars().all()
    assert statuses == [WebhookLogStatus.PROCESSED] * 50


async def test_job_of_a_killed_worker_runs_again_after_its_lease(
    sessionmaker: Sessions, engine: Any, route: Route, client: httpx.AsyncClient
) -> None:
    paying = await paying_order(sessionmaker, quantity=2, keys=4)
    body, headers = _finished(paying)
    assert (
        await client.post("/api/webhooks/nowpayments", content=body, headers=headers)
    ).status_code == 200
    assert await process_next(sessionmaker, Decimal(0))
    assert await _order_status(sessionmaker, paying) is OrderStatus.PAID

    # Hold the order row so the first worker claims the job and then blocks inside it.
    async with engine.connect() as blocker:
        await blocker.execute(
            text("SELECT 1 FROM orders WHERE id = :id FOR UPDATE"), {"id": paying.order_id}
        )
        with workers(route, 1, lease_seconds=2) as [doomed]:

            async def claimed() -> bool:
                async with sessionmaker() as session:
                    job = (
                        await session.execute(select(Job).where(Job.kind == FULFIL_ORDER_JOB))
                    ).scalar_one()
                    return job.status is JobStatus.RUNNING

            await _wait_for(claimed)
            doomed.send_signal(signal.SIGKILL)
            doomed.wait(timeout=10)
        await blocker.rollback()

    async with sessionmaker() as session:
        job = (await session.execute(select(Job).where(Job.kind == FULFIL_ORDER_JOB))).scalar_one()
    assert job.status is JobStatus.RUNNING and job.attempts == 1  # held by a dead worker

    with workers(route, 1, lease_seconds=2):
        await _wait_for(lambda: _is_fulfilled(sessionmaker, paying))
    async with sessionmaker() as session:
        job = (await session.execute(select(Job).where(Job.kind == FULFIL_ORDER_JOB))).scalar_one()
    assert job.status is JobStatus.SUCCEEDED
    assert job.attempts == 2
    assert await _count(sessionmaker, LicenceKey, LicenceKey.order_id == paying.order_id) == 2
    assert await _count(sessionmaker, StatusChange, StatusChange.to_status == "fulfilled") == 1

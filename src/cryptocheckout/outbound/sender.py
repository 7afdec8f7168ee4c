"""Sending delivery jobs: signed POSTs to the endpoints, in a lane of their own.

The worker's main loop applies notifications and runs the payment core's jobs one after the
other; a delivery may wait 10 s for a slow endpoint, so deliveries run here instead, several
at a time and at most `per_endpoint` at a time for any one endpoint. A dead endpoint costs
its own slots, never a payment's time nor another endpoint's: the lane claims a job only
when its endpoint has a free slot, so no claimed job waits behind a slow endpoint.

Each request connects to the addresses checked for it (`pinning`), never to a second lookup.

No database transaction is open while a request is in flight (SQLite's writers take the
lock up front): the endpoint is read in one short session, the attempt logged in another,
and the job completed in the job's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cryptocheckout.config import Settings
from cryptocheckout.kit import jobs
from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.jobs_models import JobStatus
from cryptocheckout.outbound import addresses, repository
from cryptocheckout.outbound.addresses import EndpointUrlRefused
from cryptocheckout.outbound.models import WebhookDelivery, WebhookEndpoint
from cryptocheckout.outbound.pinning import PinnedTransport, pinned
from cryptocheckout.outbound.service import WEBHOOK_DELIVERY_JOB, retry_delay
from cryptocheckout.outbound.signing import signature_header

logger = logging.getLogger("cryptocheckout.outbound")

TIMEOUT_SECONDS = 10.0
EXCERPT_BYTES = 1024  # of each answer, kept in the attempt's log
KEEP_ATTEMPTS = timedelta(days=30)
PRUNE_EVERY_SECONDS = 600.0
USER_AGENT = "cryptocheckout-webhooks/1"


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    excerpt: str | None
    error: str | None
    duration_ms: int

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def describe(self) -> str:
        if self.error:
            return self.error
        return f"answered {self.status_code}"


class DeliveryLane:
    """Claims `webhook_delivery` jobs only and sends them concurrently, bounded per endpoint."""

    kinds: tuple[str, ...] = (WEBHOOK_DELIVERY_JOB,)

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        allow_private: bool = False,
        disable_after: timedelta = timedelta(days=5),
        concurrency: int = 16,
        per_endpoint: int = 4,
        poll_interval: float = 0.5,
        lease: timedelta = timedelta(minutes=2),
    ) -> None:
        self.sessionmaker = sessionmaker
        self.allow_private = allow_private
        self.disable_after = disable_after
        self.concurrency = concurrency
        self.per_endpoint = per_endpoint
        self.poll_interval = poll_interval
        # Longer than a request's timeout (a claimed job never waits for a slot).
        self.lease = lease
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:webhooks:{uuid.uuid4().hex[:6]}"
        # Deliveries in flight per endpoint id; an endpoint leaves it when its last one ends,
        # so it holds at most `concurrency` keys.
        self._in_flight: dict[str, int] = {}
        self._http: httpx.AsyncClient | None = None

    @classmethod
    def from_settings(
        cls, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
    ) -> DeliveryLane:
        return cls(
            sessionmaker,
            allow_private=settings.webhooks_allow_private,
            disable_after=timedelta(days=settings.webhook_disable_after_days),
            poll_interval=max(settings.worker_poll_seconds, 0.5),
        )

    async def __aenter__(self) -> DeliveryLane:
        # Redirects are not followed: a 3xx is an answer, and a failure.
        # Passing a transport also leaves out proxies from the environment: a proxy would
        # resolve the name itself.
        limits = httpx.Limits(max_connections=self.concurrency)
        self._http = httpx.AsyncClient(
            transport=PinnedTransport(limits=limits),
            timeout=TIMEOUT_SECONDS,
            follow_redirects=False,
            headers={"user-agent": USER_AGENT},
        )
        return self

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: claim due deliveries into free slots and send them."""
        async with self:
            running: set[asyncio.Task[Any]] = set()
            prune_due = 0.0
            while not stop.is_set():
                if time.monotonic() >= prune_due:
                    prune_due = time.monotonic() + PRUNE_EVERY_SECONDS
                    await self._prune()
                claimed: list[jobs.ClaimedJob] = []
                free = self.concurrency - len(running)
                if free > 0:
                    try:
                        claimed = await self.claim(free)
                    except Exception:
                        logger.exception("claiming webhook deliveries failed")
                for job in claimed:
                    task = asyncio.create_task(self.run_job(job))
                    running.add(task)
                    task.add_done_callback(running.discard)
                if not claimed or len(running) >= self.concurrency:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=self.poll_interval)
            if running:
                # Deliveries in flight get a moment to finish; a cut one runs again after
                # its lease, with the same webhook-id.
                _done, pending = await asyncio.wait(running, timeout=5)
                for task in pending:
                    task.cancel()

    async def run_once(self) -> int:
        """Claims the due deliveries and sends them all (tests and scripts drive this)."""
        claimed = await self.claim(self.concurrency)
        await asyncio.gather(*(self.run_job(job) for job in claimed))
        return len(claimed)

    async def claim(self, limit: int) -> list[jobs.ClaimedJob]:
        """Up to `limit` due deliveries, only for endpoints with a free slot; counted in flight."""
        async with self.sessionmaker() as session:
            claimed = await repository.claim_deliveries(
                session,
                self.worker_id,
                kind=WEBHOOK_DELIVERY_JOB,
                in_flight=self._in_flight,
                per_endpoint=self.per_endpoint,
                limit=limit,
                lease=self.lease,
                now=utcnow(),
            )
            await session.commit()
        for job in claimed:
            key = str(job.payload.get("endpoint_id"))
            self._in_flight[key] = self._in_flight.get(key, 0) + 1
        return claimed

    async def run_job(self, job: jobs.ClaimedJob) -> JobStatus:
        """Runs a job `claim` returned, and frees its endpoint's slot."""
        key = str(job.payload.get("endpoint_id"))
        try:
            return await jobs.run_one(
                self.sessionmaker, job, self.worker_id, {WEBHOOK_DELIVERY_JOB: self.deliver}
            )
        finally:
            left = self._in_flight.get(key, 0) - 1
            if left > 0:
                self._in_flight[key] = left
            else:
                self._in_flight.pop(key, None)

    async def deliver(self, _session: AsyncSession, payload: Mapping[str, Any]) -> None:
        """The delivery job's handler: one attempt, logged; a failure is retried on schedule."""
        endpoint_id = uuid.UUID(str(payload["endpoint_id"]))
        async with self.sessionmaker() as session:
            endpoint = await repository.get_endpoint(session, endpoint_id)
        if endpoint is None or not endpoint.enabled:
            return  # deleted or disabled since: nothing is sent, nothing is owed
        outcome = await self.send(endpoint, payload)
        now = utcnow()
        async with self.sessionmaker() as session:
            disabled = await repository.record_attempt(
                session,
                WebhookDelivery(
                    endpoint_id=endpoint.id,
                    event_id=uuid.UUID(str(payload["event_id"])),
                    event_type=str(payload["type"]),
                    webhook_id=str(payload["webhook_id"]),
                    status_code=outcome.status_code,
                    response_excerpt=outcome.excerpt,
                    error=outcome.error,
                    duration_ms=outcome.duration_ms,
                    created_at=now,
                ),
                now=now,
                disable_after_seconds=self.disable_after.total_seconds(),
            )
            await session.commit()
        if disabled:
            logger.warning("webhook endpoint %s disabled: failing for too long", endpoint.id)
        if not outcome.succeeded:
            raise jobs.RetryAfter(outcome.describe(), retry_delay)

    async def send(self, endpoint: WebhookEndpoint, payload: Mapping[str, Any]) -> Outcome:
        started = time.monotonic()

        def took() -> int:
            return round((time.monotonic() - started) * 1000)

        try:
            # Resolved once: the request connects to exactly these addresses.
            checked = await addresses.checked_addresses(
                endpoint.url, allow_private=self.allow_private
            )
        except EndpointUrlRefused as exc:
            return Outcome(None, None, exc.detail, took())
        now = utcnow()
        timestamp = int(now.timestamp())
        body = str(payload["body"])
        message_id = str(payload["webhook_id"])
        headers = {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(
                endpoint.signing_secrets(now), message_id, timestamp, body
            ),
        }
        if self._http is None:
            raise RuntimeError("the delivery lane is not open (use `async with lane`)")
        pin = pinned.set(tuple(checked))
        try:
            # httpx's timeout bounds each read; this bounds the whole answer.
            async with (
                asyncio.timeout(TIMEOUT_SECONDS),
                self._http.stream(
                    "POST", endpoint.url, content=body.encode(), headers=headers
                ) as response,
            ):
                excerpt = await _excerpt(response)
        except (httpx.TimeoutException, TimeoutError):
            return Outcome(None, None, f"no answer within {TIMEOUT_SECONDS:g} s", took())
        except httpx.HTTPError as exc:
            return Outcome(None, None, f"{type(exc).__name__}: {exc}"[:500], took())
        finally:
            pinned.reset(pin)
        error = None
        if 300 <= response.status_code < 400:
            error = f"answered {response.status_code} (redirects are not followed)"
        return Outcome(response.status_code, excerpt, error, took())

    async def _prune(self) -> None:
        try:
            async with self.sessionmaker() as session:
                pruned = await repository.prune_deliveries(session, utcnow() - KEEP_ATTEMPTS)
                await session.commit()
        except Exception:
            logger.exception("pruning webhook delivery attempts failed")
            return
        if pruned:
            logger.info("pruned %d webhook delivery attempts older than 30 days", pruned)


async def _excerpt(response: httpx.Response) -> str:
    """At most EXCERPT_BYTES of the answer: an endpoint cannot make us read megabytes."""
    taken = bytearray()
    async for chunk in response.aiter_raw():
        taken.extend(chunk)
        if len(taken) >= EXCERPT_BYTES:
            break
    return bytes(taken[:EXCERPT_BYTES]).decode("utf-8", "replace")

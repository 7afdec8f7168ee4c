"""The group-commit queue: requests wait here until a writer has committed their row."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from cryptocheckout.kit.metrics import REGISTRY
from cryptocheckout.webhooks.ingest.body import Incoming, Rejected
from cryptocheckout.webhooks.ingest.postgres_writer import PostgresWriter
from cryptocheckout.webhooks.ingest.sqlalchemy_writer import SqlAlchemyWriter

logger = logging.getLogger("cryptocheckout.webhooks")

MAX_BATCH = 500
# Refused deliveries are logged for staff, not kept as evidence: under a flood of forged
# bodies at most this many a second are written (the metric counts them all), so the log
# never delays a signed notification's commit.
REJECTED_LOG_PER_SECOND = 50
# NOWPayments waits 3 s for an answer: past this, a 503 (and its retry) beats a timeout.
STORE_TIMEOUT_SECONDS = 2.5
PG_WRITERS = 2

STORED = REGISTRY.counter("cryptocheckout_ipn_stored_total", "Notifications stored (new)")
REDELIVERED = REGISTRY.counter(
    "cryptocheckout_ipn_redelivered_total", "Exact redeliveries recognised by fingerprint"
)
REJECTED = REGISTRY.counter("cryptocheckout_ipn_rejected_total", "Deliveries refused, by reason")
BATCHES = REGISTRY.counter("cryptocheckout_ipn_commits_total", "Group commits of notifications")


class StoreUnavailable(Exception):
    """The notification could not be stored: answer 503 so that NOWPayments retries."""


class Writer(Protocol):
    """Stores one batch in one transaction; returns the fingerprints of the new rows.

    `items` are distinct notifications with their delivery counts, in fingerprint order.
    `exact` False is the one-by-one retry of a batch the database refused: the writer
    stores the cleaned display copy of the body then.
    """

    async def write(
        self, items: Sequence[tuple[Incoming, int]], rejected: Sequence[Rejected], *, exact: bool
    ) -> set[str]: ...

    async def close(self) -> None: ...


def _writers(engine: AsyncEngine) -> list[Writer]:
    # On PostgreSQL two writers take turns: while one waits for its COMMIT to be flushed,
    # the other is already sending the next batch, so a request that arrives just after a
    # batch left waits for one flush, not two. SQLite has one writer at a time anyway.
    if engine.dialect.name == "postgresql":
        return [PostgresWriter(engine, timeout=STORE_TIMEOUT_SECONDS) for _ in range(PG_WRITERS)]
    return [SqlAlchemyWriter(engine, timeout=STORE_TIMEOUT_SECONDS)]


class _Stop:
    """Put on the queue by `stop`: the writer that takes it finishes its round and returns."""


class NotificationStore:
    """The writer tasks of one process; `store` returns once the notification is committed."""

    def __init__(self, engine: AsyncEngine, on_stored: Callable[[], None] | None = None) -> None:
        self._writers = _writers(engine)
        # Notifications, and None to wake a writer for the rejected log alone.
        self._queue: asyncio.Queue[Incoming | _Stop | None] = asyncio.Queue()
        self._rejected: list[Rejected] = []
        self._rejected_allowance = float(REJECTED_LOG_PER_SECOND)
        self._rejected_at = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._on_stored = on_stored

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(writer), name=f"ipn-writer-{n}")
            for n, writer in enumerate(self._writers)
        ]

    async def stop(self) -> None:
        """Lets each writer finish what was queued before, then ends it. A writer cancelled
        inside its transaction could leave SQLite's write lock held by its connection, so
        cancelling is only the last resort, for a writer that does not finish in time."""
        for _ in self._tasks:
            self._queue.put_nowait(_Stop())
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=STORE_TIMEOUT_SECONDS + 1)
            for task in late:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._tasks = []
        for writer in self._writers:
            await writer.close()

    async def store(self, item: Incoming) -> bool:
        """Durably stores the notification; True if new, False for a redelivery."""
        if not any(not task.done() for task in self._tasks):
            raise StoreUnavailable("the notification writer is not running")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        item.future = future
        self._queue.put_nowait(item)
        # A timer per request, not wait_for(): it costs no extra task on the hot path.
        timer = loop.call_later(STORE_TIMEOUT_SECONDS, _expire, future)
        try:
            return await future
        finally:
            timer.cancel()

    def reject(self, item: Rejected) -> None:
        """Logs a refused delivery in the background: a 401 needs no durability."""
        REJECTED.inc(reason=item.reason)
        if not self._tasks:
            return
        now = asyncio.get_running_loop().time()
        self._rejected_allowance = min(
            float(REJECTED_LOG_PER_SECOND),
            self._rejected_allowance + (now - self._rejected_at) * REJECTED_LOG_PER_SECOND,
        )
        self._rejected_at = now
        if self._rejected_allowance < 1:
            return
        self._rejected_allowance -= 1
        self._rejected.append(item)
        if len(self._rejected) == 1:
            self._queue.put_nowait(None)

    async def _run(self, writer: Writer) -> None:
        stopping = False
        while not stopping:
            batch: list[Incoming | None] = []
            first = await self._queue.get()
            if isinstance(first, _Stop):
                stopping = True
            else:
                batch.append(first)
            while not stopping and len(batch) < MAX_BATCH and not self._queue.empty():
                item = self._queue.get_nowait()
                if isinstance(item, _Stop):
                    stopping = True  # what came before it is stored in this last round
                else:
                    batch.append(item)
            notifications = [i for i in batch if i is not None]
            rejected, self._rejected = self._rejected, []
            if not notifications and not rejected:
                continue
            try:
                await self._store_batch(writer, notifications, rejected)
            except Exception:  # pragma: no cover - _store_batch settles every future itself
                logger.exception("notification writer round failed")
            if notifications and self._on_stored is not None:
                self._on_stored()

    async def _store_batch(
        self, writer: Writer, notifications: list[Incoming], rejected: list[Rejected]
    ) -> None:
        try:
            created = await self._write(writer, notifications, rejected, exact=True)
        except Exception as exc:
            # One row the database refuses (odd content) must not fail the others with it:
            # store them one by one, with the display copy of each body cleaned.
            logger.warning("group commit failed (%s); storing one by one", exc)
            for item in notifications:
                try:
                    created = await self._write(writer, [item], [], exact=False)
                except Exception as one_exc:
                    logger.exception("storing a notification failed")
                    _fail([item], one_exc)
                else:
                    _settle([item], created)
            return
        _settle(notifications, created)

    async def _write(
        self,
        writer: Writer,
        notifications: list[Incoming],
        rejected: list[Rejected],
        *,
        exact: bool,
    ) -> set[str]:
        counted: dict[str, tuple[Incoming, int]] = {}
        for item in notifications:
            first, count = counted.get(item.fingerprint, (item, 0))
            counted[item.fingerprint] = (first, count + 1)
        # Rows in fingerprint order: two writers upserting the same redelivered rows take
        # their row locks in the same order, so they wait for each other, never deadlock.
        ordered = [counted[fp] for fp in sorted(counted)]
        created = await writer.write(ordered, rejected, exact=exact)
        if counted:
            BATCHES.inc()
            STORED.inc(len(created))
            REDELIVERED.inc(len(notifications) - len(created))
        return created


def _expire(future: asyncio.Future[bool]) -> None:
    if not future.done():
        future.set_exception(StoreUnavailable("storing the notification timed out"))


def _settle(items: list[Incoming], created: set[str]) -> None:
    created = set(created)
    for item in items:
        # Only the first copy of a new notification in the batch is "new".
        new = item.fingerprint in created
        created.discard(item.fingerprint)
        if item.future is not None and not item.future.done():
            item.future.set_result(new)


def _fail(items: list[Incoming], exc: Exception) -> None:
    for item in items:
        if item.future is not None and not item.future.done():
            item.future.set_exception(StoreUnavailable(str(exc)))

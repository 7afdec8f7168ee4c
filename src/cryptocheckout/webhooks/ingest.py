"""Durable storage of incoming notifications, with group commit.

NOWPayments must get a 200 only for a notification that is durably stored. One COMMIT per
request (one fsync each) caps the endpoint at the disk's flush rate, so concurrent
deliveries are queued to a single writer that stores everything that arrived meanwhile in
one multi-row INSERT and one COMMIT, then wakes every waiting request. Each request still
answers only after its own row is committed: durability is unchanged, the flushes are shared.

An exact redelivery (same content fingerprint) is counted on its original row by
`ON CONFLICT (fingerprint) DO UPDATE`, never stored or applied twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.metrics import REGISTRY
from cryptocheckout.nowpayments.models import parse_id
from cryptocheckout.nowpayments.signature import canonical_json
from cryptocheckout.webhooks.models import RejectedWebhook, WebhookLog, WebhookLogStatus

logger = logging.getLogger("cryptocheckout.webhooks")

PROVIDER = "nowpayments"
MAX_BATCH = 500
# The rejected-delivery log keeps at most this many rows; the oldest go first.
REJECTED_LOG_LIMIT = 2000
STORE_TIMEOUT_SECONDS = 2.5

STORED = REGISTRY.counter("cryptocheckout_ipn_stored_total", "Notifications stored (new)")
REDELIVERED = REGISTRY.counter(
    "cryptocheckout_ipn_redelivered_total", "Exact redeliveries recognised by fingerprint"
)
REJECTED = REGISTRY.counter("cryptocheckout_ipn_rejected_total", "Deliveries refused, by reason")
BATCHES = REGISTRY.counter("cryptocheckout_ipn_commits_total", "Group commits of notifications")


REJECTED_TABLE: Table = RejectedWebhook.__table__  # type: ignore[assignment]
LOG_TABLE: Table = WebhookLog.__table__  # type: ignore[assignment]


class StoreUnavailable(Exception):
    """The notification could not be stored: answer 503 so that NOWPayments retries."""


@dataclass
class Incoming:
    fingerprint: str
    external_id: str | None
    provider_status: str | None
    raw_body: str
    raw_payload: dict[str, Any]
    received_at: datetime
    future: asyncio.Future[bool] | None = field(repr=False, default=None)


@dataclass
class Rejected:
    reason: str
    remote_addr: str | None
    body_sha256: str
    body_size: int
    received_at: datetime


def fingerprint(payload: dict[str, Any]) -> str:
    """SHA-256 of the canonical form: a redelivery matches even if a proxy re-spaced it."""
    return hashlib.sha256(canonical_json(payload).encode("utf-8", "surrogatepass")).hexdigest()


def _storable(value: Any) -> Any:
    # raw_payload is the display copy (raw_body is the truth): make it storable in JSONB,
    # which refuses \u0000, lone surrogates and non-finite numbers, so that one odd but
    # validly signed body can never fail the batch it shares with others.
    if isinstance(value, str):
        cleaned = value.replace("\x00", "\ufffd")
        return cleaned.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {_storable(str(k)): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def incoming(raw_body: bytes, payload: dict[str, Any]) -> Incoming:
    """What is stored of a verified notification. Raises RecursionError for absurd nesting."""
    status = payload.get("payment_status")
    payment_id = payload.get("payment_id")
    # The verifier parsed numbers the JavaScript way (as doubles); ids are whole numbers.
    if isinstance(payment_id, float) and payment_id.is_integer():
        payment_id = int(payment_id)
    try:
        external_id = parse_id(payment_id)
    except ValueError:
        external_id = None
    return Incoming(
        fingerprint=fingerprint(payload),
        external_id=_storable(external_id[:64]) if external_id else None,
        provider_status=_storable(status[:32]) if isinstance(status, str) else None,
        raw_body=raw_body.decode("utf-8", "surrogateescape").encode("utf-8", "replace").decode(),
        raw_payload=_storable(payload),
        received_at=utcnow(),
    )


class NotificationStore:
    """One writer task per process; `store` returns once the notification is committed."""

    def __init__(self, engine: AsyncEngine, on_stored: Callable[[], None] | None = None) -> None:
        self._engine = engine
        self._queue: asyncio.Queue[Incoming | Rejected] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._on_stored = on_stored
        self._rejected_since_prune = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ipn-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def store(self, item: Incoming) -> bool:
        """Durably stores the notification; True if new, False for a redelivery."""
        if self._task is None or self._task.done():
            raise StoreUnavailable("the notification writer is not running")
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        item.future = future
        self._queue.put_nowait(item)
        try:
            return await asyncio.wait_for(asyncio.shield(future), STORE_TIMEOUT_SECONDS)
        except TimeoutError as exc:
            raise StoreUnavailable("storing the notification timed out") from exc

    def reject(self, item: Rejected) -> None:
        """Logs a refused delivery in the background: a 401 needs no durability."""
        REJECTED.inc(reason=item.reason)
        if self._task is not None and self._queue.qsize() < 10 * MAX_BATCH:
            self._queue.put_nowait(item)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            notifications = [i for i in batch if isinstance(i, Incoming)]
            rejected = [i for i in batch if isinstance(i, Rejected)]
            try:
                created = await self._write(notifications, rejected)
            except Exception as exc:
                if len(notifications) > 1:
                    # One row the database refuses must not fail the others with it.
                    logger.warning("group commit failed (%s); storing one by one", exc)
                    await self._write_one_by_one(notifications)
                    continue
                logger.exception("storing %d notifications failed", len(notifications))
                _fail(notifications, exc)
                continue
            for item in notifications:
                # Only the first copy of a new notification in the batch is "new".
                new = item.fingerprint in created
                created.discard(item.fingerprint)
                if item.future is not None and not item.future.done():
                    item.future.set_result(new)
            if notifications and self._on_stored is not None:
                self._on_stored()

    async def _write_one_by_one(self, notifications: list[Incoming]) -> None:
        for item in notifications:
            try:
                created = await self._write([item], [])
            except Exception as exc:
                logger.exception("storing a notification failed")
                _fail([item], exc)
                continue
            if item.future is not None and not item.future.done():
                item.future.set_result(item.fingerprint in created)

    async def _write(self, notifications: list[Incoming], rejected: list[Rejected]) -> set[str]:
        by_fingerprint: dict[str, tuple[Incoming, int]] = {}
        for item in notifications:
            first, count = by_fingerprint.get(item.fingerprint, (item, 0))
            by_fingerprint[item.fingerprint] = (first, count + 1)
        created: set[str] = set()
        async with self._engine.begin() as conn:
            if by_fingerprint:
                created = await self._upsert(conn, list(by_fingerprint.values()))
            if rejected:
                await conn.execute(
                    insert(REJECTED_TABLE),
                    [
                        {
                            "id": uuid.uuid4(),
                            "provider": PROVIDER,
                            "reason": r.reason[:200],
                            "remote_addr": r.remote_addr,
                            "body_sha256": r.body_sha256,
                            "body_size": r.body_size,
                            "created_at": r.received_at,
                        }
                        for r in rejected
                    ],
                )
                self._rejected_since_prune += len(rejected)
                if self._rejected_since_prune >= REJECTED_LOG_LIMIT // 10:
                    await conn.execute(_prune_rejected())
                    self._rejected_since_prune = 0
        if by_fingerprint:
            BATCHES.inc()
            STORED.inc(len(created))
            REDELIVERED.inc(len(notifications) - len(created))
        return created

    async def _upsert(self, conn: Any, items: list[tuple[Incoming, int]]) -> set[str]:
        table = LOG_TABLE
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        rows = [
            {
                "id": uuid.uuid4(),
                "provider": PROVIDER,
                "external_id": item.external_id,
                "provider_status": item.provider_status,
                "status": WebhookLogStatus.PENDING.value,
                "fingerprint": item.fingerprint,
                "raw_body": item.raw_body,
                "raw_payload": item.raw_payload,
                "deliveries": count,
                "attempts": 0,
                "last_received_at": item.received_at,
                "created_at": item.received_at,
            }
            for item, count in items
        ]
        statement = dialect.insert(table).values(rows)
        statement = statement.on_conflict_do_update(
            index_elements=["fingerprint"],
            set_={
                "deliveries": table.c.deliveries + statement.excluded.deliveries,
                "last_received_at": statement.excluded.last_received_at,
            },
        ).returning(table.c.fingerprint, table.c.id)
        result = await conn.execute(statement)
        # A row keeps the id it was inserted with: our id back means this batch created it.
        offered = {row["fingerprint"]: row["id"] for row in rows}
        return {fp for fp, row_id in result.all() if offered[fp] == row_id}


def _fail(items: list[Incoming], exc: Exception) -> None:
    for item in items:
        if item.future is not None and not item.future.done():
            item.future.set_exception(StoreUnavailable(str(exc)))


def _prune_rejected() -> Any:
    table = REJECTED_TABLE
    keep = (
        select(table.c.id).order_by(table.c.created_at.desc()).limit(REJECTED_LOG_LIMIT)
    ).scalar_subquery()
    return delete(table).where(table.c.id.not_in(keep))


async def count_rejected(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            (await conn.execute(select(func.count()).select_from(RejectedWebhook))).scalar_one()
        )

"""Durable storage of incoming notifications, with group commit.

NOWPayments must get a 200 only for a notification that is durably stored. One COMMIT per
request (one fsync each) caps the endpoint at the disk's flush rate, so concurrent
deliveries are queued to a single writer that stores everything that arrived meanwhile in
one INSERT and one COMMIT, then wakes every waiting request. Each request still answers only
after its own row is committed: durability is unchanged, the flushes are shared.

An exact redelivery (same content fingerprint) is counted on its original row by
`ON CONFLICT (fingerprint) DO UPDATE`, never stored or applied twice.

On PostgreSQL the writer keeps its own asyncpg connection and one prepared statement that
takes the whole batch as arrays (`INSERT ... SELECT FROM unnest(...)`): no SQL is compiled
per batch, which is most of the cost of a multi-row INSERT built by SQLAlchemy. SQLite, the
embedded default, goes through SQLAlchemy.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import asyncpg
from sqlalchemy import Table, delete, insert, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.metrics import REGISTRY
from cryptocheckout.nowpayments.models import parse_id
from cryptocheckout.webhooks.models import RejectedWebhook, WebhookLog, WebhookLogStatus

logger = logging.getLogger("cryptocheckout.webhooks")

PROVIDER = "nowpayments"
MAX_BATCH = 500
# The rejected-delivery log keeps at most this many rows; the oldest go first.
REJECTED_LOG_LIMIT = 2000
STORE_TIMEOUT_SECONDS = 2.5
PG_WRITERS = 2

REJECTED_TABLE: Table = RejectedWebhook.__table__  # type: ignore[assignment]
LOG_TABLE: Table = WebhookLog.__table__  # type: ignore[assignment]

STORED = REGISTRY.counter("cryptocheckout_ipn_stored_total", "Notifications stored (new)")
REDELIVERED = REGISTRY.counter(
    "cryptocheckout_ipn_redelivered_total", "Exact redeliveries recognised by fingerprint"
)
REJECTED = REGISTRY.counter("cryptocheckout_ipn_rejected_total", "Deliveries refused, by reason")
BATCHES = REGISTRY.counter("cryptocheckout_ipn_commits_total", "Group commits of notifications")


class StoreUnavailable(Exception):
    """The notification could not be stored: answer 503 so that NOWPayments retries."""


@dataclass
class Incoming:
    fingerprint: str
    external_id: str | None
    provider_status: str | None
    raw_body: str
    payload: dict[str, Any] = field(repr=False)
    received_at: datetime
    future: asyncio.Future[bool] | None = field(repr=False, default=None)

    def storable_payload(self) -> dict[str, Any]:
        stored: dict[str, Any] = _storable(self.payload)
        return stored


@dataclass
class Rejected:
    reason: str
    remote_addr: str | None
    body_sha256: str
    body_size: int
    received_at: datetime


def fingerprint(payload: dict[str, Any]) -> str:
    """SHA-256 of the content with keys sorted: a redelivery matches even if a proxy
    re-spaced or re-ordered it. (Only determinism matters here, so Python's own JSON
    writer does; the signature needs JavaScript's, see nowpayments/signature.py.)"""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _storable(value: Any) -> Any:
    # raw_payload is the display copy (raw_body is the truth): make it storable in JSONB,
    # which refuses \u0000, lone surrogates and non-finite numbers.
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


# Real notifications nest two levels (the fee object). Far deeper bodies are refused before
# any recursive code (fingerprint, storage) could run out of stack on them.
MAX_NESTING = 32


class TooDeep(ValueError):
    pass


def _check_nesting(payload: Any) -> None:
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_NESTING:
            raise TooDeep(f"nested deeper than {MAX_NESTING} levels")
        children = value.values() if isinstance(value, dict) else value
        if isinstance(value, dict | list):
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def incoming(raw_body: bytes, payload: dict[str, Any]) -> Incoming:
    """What is stored of a verified notification. Raises TooDeep for absurd nesting."""
    _check_nesting(payload)
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
        raw_body=raw_body.decode("utf-8", "replace"),
        payload=payload,
        received_at=utcnow(),
    )


class _Writer(Protocol):
    async def write(
        self, items: Sequence[tuple[Incoming, int]], rejected: Sequence[Rejected], *, exact: bool
    ) -> set[str]: ...

    async def close(self) -> None: ...


class NotificationStore:
    """One writer task per process; `store` returns once the notification is committed."""

    def __init__(self, engine: AsyncEngine, on_stored: Callable[[], None] | None = None) -> None:
        # On PostgreSQL two writers take turns: while one waits for its COMMIT to be
        # flushed, the other is already sending the next batch, so a request that arrives
        # just after a batch left waits for one flush, not two. SQLite has one writer at a
        # time anyway.
        postgres = engine.dialect.name == "postgresql"
        self._writers: list[_Writer] = (
            [_PostgresWriter(engine) for _ in range(PG_WRITERS)]
            if postgres
            else [_SqlAlchemyWriter(engine)]
        )
        self._queue: asyncio.Queue[Incoming | Rejected] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._on_stored = on_stored

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(writer), name=f"ipn-writer-{n}")
            for n, writer in enumerate(self._writers)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
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
        if self._tasks and self._queue.qsize() < 10 * MAX_BATCH:
            self._queue.put_nowait(item)

    async def _run(self, writer: _Writer) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            notifications = [i for i in batch if isinstance(i, Incoming)]
            rejected = [i for i in batch if isinstance(i, Rejected)]
            try:
                await self._store_batch(writer, notifications, rejected)
            except Exception:  # pragma: no cover - _store_batch settles every future itself
                logger.exception("notification writer round failed")
            if notifications and self._on_stored is not None:
                self._on_stored()

    async def _store_batch(
        self, writer: _Writer, notifications: list[Incoming], rejected: list[Rejected]
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
        writer: _Writer,
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


def _rejected_rows(rejected: Sequence[Rejected]) -> list[dict[str, Any]]:
    return [
        {
            "id": uuid.uuid4(),
            "provider": PROVIDER,
            "reason": r.reason[:200],
            # The address may come from a proxy header: cut it to the column.
            "remote_addr": (r.remote_addr or "")[:64] or None,
            "body_sha256": r.body_sha256,
            "body_size": r.body_size,
            "created_at": r.received_at,
        }
        for r in rejected
    ]


class _SqlAlchemyWriter:
    """Portable writer (SQLite): one multi-row upsert per batch through SQLAlchemy."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._rejected_since_prune = 0

    async def close(self) -> None:
        return None

    async def write(
        self, items: Sequence[tuple[Incoming, int]], rejected: Sequence[Rejected], *, exact: bool
    ) -> set[str]:
        created: set[str] = set()
        async with self._engine.begin() as conn:
            if items:
                created = await self._upsert(conn, items)
            if rejected:
                await conn.execute(insert(REJECTED_TABLE), _rejected_rows(rejected))
                self._rejected_since_prune += len(rejected)
                if self._rejected_since_prune >= REJECTED_LOG_LIMIT // 10:
                    await conn.execute(_prune_rejected())
                    self._rejected_since_prune = 0
        return created

    async def _upsert(self, conn: Any, items: Sequence[tuple[Incoming, int]]) -> set[str]:
        table = LOG_TABLE
        rows = [
            {
                "id": uuid.uuid4(),
                "provider": PROVIDER,
                "external_id": item.external_id,
                "provider_status": item.provider_status,
                "status": WebhookLogStatus.PENDING.value,
                "fingerprint": item.fingerprint,
                "raw_body": item.raw_body,
                "raw_payload": item.storable_payload(),
                "deliveries": count,
                "attempts": 0,
                "last_received_at": item.received_at,
                "created_at": item.received_at,
            }
            for item, count in items
        ]
        values = sqlite.insert(table).values(rows)
        upsert = values.on_conflict_do_update(
            index_elements=["fingerprint"],
            set_={
                "deliveries": table.c.deliveries + values.excluded.deliveries,
                "last_received_at": values.excluded.last_received_at,
            },
        ).returning(table.c.fingerprint, table.c.id)
        result = await conn.execute(upsert)
        # A row keeps the id it was inserted with: our id back means this batch created it.
        offered = {row["fingerprint"]: row["id"] for row in rows}
        return {fp for fp, row_id in result.all() if offered[fp] == row_id}


_PG_UPSERT = """
INSERT INTO webhook_logs (id, provider, external_id, provider_status, status, fingerprint,
                          raw_body, raw_payload, deliveries, attempts, last_received_at,
                          created_at)
SELECT u.id, $1, u.external_id, u.provider_status, 'pending', u.fingerprint,
       u.raw_body, u.raw_payload::jsonb, u.deliveries, 0, u.received_at, u.received_at
FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::int4[], $9::timestamptz[])
     AS u(id, external_id, provider_status, fingerprint, raw_body, raw_payload, deliveries,
          received_at)
ON CONFLICT (fingerprint) DO UPDATE
   SET deliveries = webhook_logs.deliveries + EXCLUDED.deliveries,
       last_received_at = EXCLUDED.last_received_at
RETURNING fingerprint, id
"""

_PG_REJECT = """
INSERT INTO rejected_webhooks (id, provider, reason, remote_addr, body_sha256, body_size,
                               created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""

_PG_PRUNE = """
DELETE FROM rejected_webhooks WHERE id NOT IN (
    SELECT id FROM rejected_webhooks ORDER BY created_at DESC LIMIT $1)
"""


class _PostgresWriter:
    """The hot path on PostgreSQL: its own connection, one prepared statement per batch."""

    def __init__(self, engine: AsyncEngine) -> None:
        url = engine.url
        query = dict(url.query)
        self._connect_args: dict[str, Any] = {
            # A redelivery of a row someone holds locked must not stall the whole batch:
            # the batch fails fast and its rows are stored one by one.
            "server_settings": {"lock_timeout": "1000"},
            "command_timeout": STORE_TIMEOUT_SECONDS,
            "timeout": STORE_TIMEOUT_SECONDS,
        }
        ssl = query.get("ssl") or query.get("sslmode")
        if ssl:
            self._connect_args["ssl"] = str(ssl)
        # SQLAlchemy's setting for pgbouncer (transaction mode cannot keep named statements).
        cache = query.get("prepared_statement_cache_size")
        if cache is not None:
            self._connect_args["statement_cache_size"] = int(str(cache))
        # Only the address goes into the DSN: SQLAlchemy's own URL options would reach
        # PostgreSQL as unknown server settings.
        self._dsn = url.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
        self._conn: asyncpg.Connection | None = None
        self._rejected_since_prune = 0

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)
            self._conn = None

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(self._dsn, **self._connect_args)
        return self._conn

    async def write(
        self, items: Sequence[tuple[Incoming, int]], rejected: Sequence[Rejected], *, exact: bool
    ) -> set[str]:
        try:
            return await self._write(items, rejected, exact=exact)
        except (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError):
            await self.close()  # reconnect next time
            raise

    async def _write(
        self, items: Sequence[tuple[Incoming, int]], rejected: Sequence[Rejected], *, exact: bool
    ) -> set[str]:
        conn = await self._connection()
        ids = [uuid.uuid4() for _ in items]
        created: set[str] = set()
        async with conn.transaction():
            if items:
                rows = await conn.fetch(
                    _PG_UPSERT,
                    PROVIDER,
                    ids,
                    [i.external_id for i, _ in items],
                    [i.provider_status for i, _ in items],
                    [i.fingerprint for i, _ in items],
                    [i.raw_body for i, _ in items],
                    # The verified body is the JSON to keep; only when PostgreSQL refused
                    # it (exact=False: the retry of a failed batch) is it cleaned first.
                    [
                        i.raw_body if exact else json.dumps(i.storable_payload(), allow_nan=False)
                        for i, _ in items
                    ],
                    [count for _, count in items],
                    [i.received_at for i, _ in items],
                )
                offered = {
                    item.fingerprint: row_id for (item, _), row_id in zip(items, ids, strict=True)
                }
                created = {r["fingerprint"] for r in rows if offered[r["fingerprint"]] == r["id"]}
            if rejected:
                await conn.executemany(
                    _PG_REJECT, [tuple(row.values()) for row in _rejected_rows(rejected)]
                )
                self._rejected_since_prune += len(rejected)
                if self._rejected_since_prune >= REJECTED_LOG_LIMIT // 10:
                    await conn.execute(_PG_PRUNE, REJECTED_LOG_LIMIT)
                    self._rejected_since_prune = 0
        return created


def _prune_rejected() -> Any:
    table = REJECTED_TABLE
    keep = (
        select(table.c.id).order_by(table.c.created_at.desc()).limit(REJECTED_LOG_LIMIT)
    ).scalar_subquery()
    return delete(table).where(table.c.id.not_in(keep))

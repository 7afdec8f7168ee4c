"""The hot path on PostgreSQL: its own asyncpg connection, one prepared statement per batch.

The batch goes over as one array per column (`INSERT ... SELECT * FROM unnest($1::uuid[],
...)`): no SQL is compiled per batch, which is most of the cost of a multi-row INSERT
built by SQLAlchemy. The statement's columns are those of `rows.log_row` and their types
those of the `webhook_logs` table, so the row is spelled in one place.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptocheckout.kit.db import asyncpg_connect_kwargs, is_pooled, pooled_set_local
from cryptocheckout.webhooks.ingest.body import Incoming, Rejected
from cryptocheckout.webhooks.ingest.rows import (
    LOG_TABLE,
    REJECTED_TABLE,
    PruneSchedule,
    log_row,
    rejected_row,
)

# The SQL below is built only from our own table's and rows' names; every value is a
# parameter.


@functools.cache
def _upsert_sql(columns: tuple[str, ...]) -> str:
    table = LOG_TABLE
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    arrays = ", ".join(
        f"${n}::{table.c[name].type.compile(dialect=dialect)}[]"
        for n, name in enumerate(columns, start=1)
    )
    return f"""
        INSERT INTO {table.name} ({", ".join(columns)})
        SELECT * FROM unnest({arrays})
        ON CONFLICT (fingerprint) DO UPDATE
           SET deliveries = {table.name}.deliveries + EXCLUDED.deliveries,
               last_received_at = EXCLUDED.last_received_at
        RETURNING fingerprint, id
    """  # noqa: S608


@functools.cache
def _insert_sql(columns: tuple[str, ...]) -> str:
    placeholders = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
    names = ", ".join(columns)
    return f"INSERT INTO {REJECTED_TABLE.name} ({names}) VALUES ({placeholders})"  # noqa: S608


_PRUNE_SQL = """
DELETE FROM rejected_webhooks WHERE id NOT IN (
    SELECT id FROM rejected_webhooks ORDER BY created_at DESC LIMIT $1)
"""


def _payload_json(item: Incoming, exact: bool) -> str:
    # The verified body is the JSON to keep; only when PostgreSQL refused it (exact=False:
    # the retry of a failed batch) is it cleaned first.
    return item.raw_body if exact else json.dumps(item.storable_payload(), allow_nan=False)


# A redelivery of a row someone holds locked must not stall the whole batch: the batch fails
# fast and its rows are stored one by one.
_LOCK_TIMEOUT = {"lock_timeout": "1000"}


class PostgresWriter:
    def __init__(self, engine: AsyncEngine, *, timeout: float) -> None:
        pooled = is_pooled(engine)
        # The address, credentials and ssl setting of the engine's URL, nothing else:
        # SQLAlchemy's own URL options would reach PostgreSQL as unknown settings.
        self._connect_args: dict[str, Any] = asyncpg_connect_kwargs(
            engine.url,
            pooled=pooled,
            server_settings=_LOCK_TIMEOUT,
            command_timeout=timeout,
            connect_timeout=timeout,
        )
        # Behind a transaction pooler (DATABASE_POOLED) no startup parameter reaches the
        # server: each write is a transaction that sets the lock timeout first.
        self._set_local = pooled_set_local(_LOCK_TIMEOUT) if pooled else []
        self._conn: asyncpg.Connection | None = None
        self._prune = PruneSchedule()

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close(timeout=2)
            self._conn = None

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(**self._connect_args)
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
        if not self._set_local:
            return await self._statements(conn, items, rejected, exact=exact)
        # Pooled: each part its own transaction, as the direct path's statements are, so a
        # failure of the staff's log never rolls back the notifications.
        created: set[str] = set()
        for part_items, part_rejected in ((items, ()), ((), rejected)):
            if not part_items and not part_rejected:
                continue
            async with conn.transaction():
                for statement in self._set_local:
                    await conn.execute(statement)
                created |= await self._statements(conn, part_items, part_rejected, exact=exact)
        return created

    async def _statements(
        self,
        conn: asyncpg.Connection,
        items: Sequence[tuple[Incoming, int]],
        rejected: Sequence[Rejected],
        *,
        exact: bool,
    ) -> set[str]:
        created: set[str] = set()
        if items:
            rows = [
                # The verified body is the JSON to keep; only when PostgreSQL refused it
                # (exact=False: the retry of a failed batch) is it cleaned first.
                log_row(
                    item,
                    count,
                    item.raw_body
                    if exact
                    else json.dumps(item.storable_payload(), allow_nan=False),
                )
                for item, count in items
            ]
            columns = tuple(rows[0])
            # Directly connected, one statement outside a transaction block is its own
            # transaction: it returns once committed, in one round trip instead of BEGIN,
            # INSERT, COMMIT. (Pooled, `_write` wraps it in a transaction with SET LOCAL.)
            returned = await conn.fetch(
                _upsert_sql(columns), *([row[c] for row in rows] for c in columns)
            )
            # A row keeps the id it was inserted with: our id back means we created it.
            offered = {row["fingerprint"]: row["id"] for row in rows}
            created = {r["fingerprint"] for r in returned if offered[r["fingerprint"]] == r["id"]}
        if rejected:
            # The staff's log of refused deliveries needs no atomicity with the above.
            entries = [rejected_row(r) for r in rejected]
            await conn.executemany(
                _insert_sql(tuple(entries[0])), [tuple(e.values()) for e in entries]
            )
            if self._prune.due_after(len(rejected)):
                await conn.execute(_PRUNE_SQL, self._prune.limit)
        return created

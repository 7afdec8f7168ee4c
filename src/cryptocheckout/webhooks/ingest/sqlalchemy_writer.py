"""The portable writer (SQLite, the embedded default): one multi-row upsert per batch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cryptocheckout.kit.db import SQLITE_EAGER_LOCK_SECONDS
from cryptocheckout.webhooks.ingest.body import Incoming, Rejected
from cryptocheckout.webhooks.ingest.rows import (
    LOG_TABLE,
    REJECTED_TABLE,
    PruneSchedule,
    log_row,
    rejected_row,
)


class SqlAlchemyWriter:
    def __init__(self, engine: AsyncEngine, *, timeout: float) -> None:
        # On SQLite the writer asks for the write lock every few milliseconds instead of
        # waiting in SQLite's busy handler, where a customer's order transactions could keep
        # it waiting past NOWPayments' 3 seconds (see kit/db.py).
        self._engine = engine.execution_options(**{SQLITE_EAGER_LOCK_SECONDS: timeout})
        self._prune = PruneSchedule()

    async def close(self) -> None:
        return None

    async def write(
        self, items: Sequence[tuple[Incoming, int]], rejected: Sequence[Rejected], *, exact: bool
    ) -> set[str]:
        created: set[str] = set()
        async with self._engine.begin() as conn:
            if items:
                created = await _upsert(conn, items)
            if rejected:
                await conn.execute(insert(REJECTED_TABLE), [rejected_row(r) for r in rejected])
                if self._prune.due_after(len(rejected)):
                    await conn.execute(_prune_rejected(self._prune.limit))
        return created


async def _upsert(conn: AsyncConnection, items: Sequence[tuple[Incoming, int]]) -> set[str]:
    table = LOG_TABLE
    rows = [log_row(item, count, item.storable_payload()) for item, count in items]
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


def _prune_rejected(limit: int) -> Any:
    table = REJECTED_TABLE
    keep = (select(table.c.id).order_by(table.c.created_at.desc()).limit(limit)).scalar_subquery()
    return delete(table).where(table.c.id.not_in(keep))

"""`cryptocheckout rotate-keys`: every stored licence key re-encrypted under the first ring key.

Small batches, each its own short transaction, so the shop keeps serving: on PostgreSQL rows
that fulfilment holds are skipped and found again by a later batch; on SQLite each batch takes
the write lock briefly. Stopping anywhere loses nothing, and running it again resumes, because
what is left to do is exactly the rows whose `key_id` is not the first key's.
"""

from __future__ import annotations

import asyncio
import logging

from cryptocheckout.catalogue.repository import count_keys_not_under
from cryptocheckout.catalogue.service import rotate_keys_batch
from cryptocheckout.kit.db import create_engine, create_sessionmaker
from cryptocheckout.kit.encryption import KeyRing

logger = logging.getLogger("cryptocheckout.rotation")
RETRY_HELD_SECONDS = 0.5


async def rotate_keys(
    database_url: str, ring: KeyRing, *, batch: int = 200, pooled: bool = False
) -> int:
    """Returns how many keys were re-encrypted (0 when every key was current already).
    `pooled`: `database_url` is a transaction-pooling proxy (`DATABASE_POOLED`)."""
    engine = create_engine(database_url, pooled=pooled)
    sessionmaker = create_sessionmaker(engine)
    total = 0
    try:
        while True:
            async with sessionmaker() as session:
                done = await rotate_keys_batch(session, ring, limit=batch)
                await session.commit()
            total += done
            if done:
                logger.info("re-encrypted %d licence keys so far", total)
                continue
            async with sessionmaker() as session:
                left = await count_keys_not_under(session, ring.current.key_id)
            if not left:
                return total
            # The rest are held by fulfilment right now (PostgreSQL skips locked rows).
            await asyncio.sleep(RETRY_HELD_SECONDS)
    finally:
        await engine.dispose()

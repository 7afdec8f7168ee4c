"""All SQL of the catalogue."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, Row, delete, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.catalogue.models import LicenceKey, Product, StockHold
from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.dialects import dialect_name, insert
from cryptocheckout.kit.encryption import Sealed


async def get(session: AsyncSession, product_id: uuid.UUID) -> Product | None:
    return await session.get(Product, product_id)


async def get_by_sku(session: AsyncSession, sku: str) -> Product | None:
    return (await session.execute(select(Product).where(Product.sku == sku))).scalar_one_or_none()


async def get_many(session: AsyncSession, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Product]:
    wanted = set(ids)
    if not wanted:
        return {}
    rows = await session.execute(select(Product).where(Product.id.in_(wanted)))
    return {product.id: product for product in rows.scalars()}


async def list_active(session: AsyncSession) -> Sequence[Product]:
    rows = await session.execute(
        select(Product).where(Product.active.is_(True)).order_by(Product.name, Product.sku)
    )
    return rows.scalars().all()


def _held(now: datetime) -> ColumnElement[bool]:
    """The key has a hold that has not lapsed (a lapsed one counts as free at once, before
    the worker deletes it)."""
    return exists().where(
        StockHold.licence_key_id == LicenceKey.id,
        or_(StockHold.expires_at.is_(None), StockHold.expires_at >= now),
    )


async def stock(session: AsyncSession, product_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Free licence keys per product: neither assigned nor held (0 for a product with none)."""
    wanted = set(product_ids)
    if not wanted:
        return {}
    rows = await session.execute(
        select(LicenceKey.product_id, func.count())
        .where(
            LicenceKey.product_id.in_(wanted),
            LicenceKey.order_id.is_(None),
            ~_held(utcnow()),
        )
        .group_by(LicenceKey.product_id)
    )
    counts: dict[uuid.UUID, int] = dict.fromkeys(wanted, 0)
    counts.update({product_id: int(count) for product_id, count in rows.all()})
    return counts


async def existing_key_hashes(
    session: AsyncSession, product_id: uuid.UUID, key_hashes: Collection[str]
) -> set[str]:
    """Which of these keyed hashes the product's licence keys already have."""
    if not key_hashes:
        return set()
    rows = await session.execute(
        select(LicenceKey.key_hash).where(
            LicenceKey.product_id == product_id, LicenceKey.key_hash.in_(set(key_hashes))
        )
    )
    return set(rows.scalars())


async def add_keys(
    session: AsyncSession, product_id: uuid.UUID, rows: Sequence[tuple[uuid.UUID, Sealed]]
) -> int:
    """Insert sealed keys (row id, sealed) unless their hash is there; returns how many were new."""
    if not rows:
        return 0
    statement = (
        insert(session, LicenceKey)
        .values(
            [
                {
                    "id": row_id,
                    "product_id": product_id,
                    "ciphertext": sealed.ciphertext,
                    "key_id": sealed.key_id,
                    "key_hash": sealed.key_hash,
                    "created_at": utcnow(),
                }
                for row_id, sealed in rows
            ]
        )
        .on_conflict_do_nothing(index_elements=["product_id", "key_hash"])
        .returning(LicenceKey.id)
    )
    return len((await session.execute(statement)).all())


async def assigned_to(session: AsyncSession, order_id: uuid.UUID) -> dict[uuid.UUID, int]:
    """How many keys of each product the order holds already."""
    rows = await session.execute(
        select(LicenceKey.product_id, func.count())
        .where(LicenceKey.order_id == order_id)
        .group_by(LicenceKey.product_id)
    )
    return {product_id: int(count) for product_id, count in rows.all()}


async def assign_free_keys(
    session: AsyncSession, product_id: uuid.UUID, order_id: uuid.UUID, count: int
) -> int:
    """Gives `count` free keys of the product to the order, all or none.

    Returns how many were free. Concurrent assigners skip each other's locked keys
    (PostgreSQL), so no key is given twice and nobody waits.
    """
    key_ids = await _free_keys(session, product_id, count)
    if len(key_ids) < count:
        return len(key_ids)
    now = utcnow()
    # A key taken from a lapsed hold of another order: that hold is over. Only lapsed ones:
    # a hold its order kept meanwhile (paid since our read) is not ours to end.
    await session.execute(
        delete(StockHold).where(
            StockHold.licence_key_id.in_(key_ids),
            or_(StockHold.order_id == order_id, StockHold.expires_at < now),
        )
    )
    kept = await session.scalar(
        select(func.count()).select_from(StockHold).where(StockHold.licence_key_id.in_(key_ids))
    )
    if kept:
        return count - int(kept)  # the caller waits for stock; this transaction rolls back
    await session.execute(
        update(LicenceKey)
        .where(LicenceKey.id.in_(key_ids))
        .values(order_id=order_id, assigned_at=now)
    )
    return count


async def keys_of_order(
    session: AsyncSession, order_id: uuid.UUID
) -> Sequence[Row[uuid.UUID, str, str]]:
    """The order's licence keys (id, ciphertext, product name), in a stable order."""
    rows = await session.execute(
        select(LicenceKey.id, LicenceKey.ciphertext, Product.name)
        .join(Product, Product.id == LicenceKey.product_id)
        .where(LicenceKey.order_id == order_id)
        .order_by(Product.name, LicenceKey.assigned_at, LicenceKey.id)
    )
    return rows.all()


async def keys_to_rotate(
    session: AsyncSession, current_key_id: str, limit: int
) -> Sequence[Row[uuid.UUID, uuid.UUID, str, str]]:
    """Up to `limit` keys not yet under the current ring key (id, product_id, ciphertext).

    On PostgreSQL rows another transaction holds (fulfilment assigning them) are skipped, not
    waited for: the next batch finds them again, since only their key id decides.
    """
    statement = (
        select(LicenceKey.id, LicenceKey.product_id, LicenceKey.ciphertext, LicenceKey.key_id)
        .where(LicenceKey.key_id != current_key_id)
        .order_by(LicenceKey.id)
        .limit(limit)
    )
    if dialect_name(session) == "postgresql":
        statement = statement.with_for_update(skip_locked=True)
    return (await session.execute(statement)).all()


async def reseal_key(
    session: AsyncSession, key_id: uuid.UUID, old_key_id: str, sealed: Sealed
) -> bool:
    """Replaces a key's ciphertext and hash, unless someone rotated it meanwhile."""
    result = await session.execute(
        update(LicenceKey)
        .where(LicenceKey.id == key_id, LicenceKey.key_id == old_key_id)
        .values(ciphertext=sealed.ciphertext, key_id=sealed.key_id, key_hash=sealed.key_hash)
    )
    return bool(getattr(result, "rowcount", 0))


async def count_keys_not_under(session: AsyncSession, key_id: str) -> int:
    rows = await session.execute(
        select(func.count()).select_from(LicenceKey).where(LicenceKey.key_id != key_id)
    )
    return int(rows.scalar_one())


async def _free_keys(session: AsyncSession, product_id: uuid.UUID, count: int) -> list[uuid.UUID]:
    """Up to `count` keys neither assigned nor held, locked for this transaction; concurrent
    callers skip each other's locked keys (PostgreSQL), so no key is taken twice."""
    free = (
        select(LicenceKey.id)
        .where(
            LicenceKey.product_id == product_id,
            LicenceKey.order_id.is_(None),
            ~_held(utcnow()),
        )
        .order_by(LicenceKey.created_at)
        .limit(count)
    )
    if dialect_name(session) == "postgresql":
        free = free.with_for_update(skip_locked=True)
    return list((await session.execute(free)).scalars())


async def hold_keys(
    session: AsyncSession,
    product_id: uuid.UUID,
    order_id: uuid.UUID,
    count: int,
    *,
    until: datetime,
) -> bool:
    """Holds `count` free keys of the product for the order until `until`, all or none."""
    key_ids = await _free_keys(session, product_id, count)
    if len(key_ids) < count:
        return False
    try:
        # On PostgreSQL a checkout that committed its hold on a key just after this
        # statement's snapshot is not seen by the NOT EXISTS above: the unique key refuses
        # the second hold, and this checkout is out of stock like any other late one.
        async with session.begin_nested():
            # Lapsed holds on these keys (not deleted by the worker yet) give way.
            await session.execute(
                delete(StockHold).where(
                    StockHold.licence_key_id.in_(key_ids), StockHold.expires_at < utcnow()
                )
            )
            session.add_all(
                StockHold(
                    licence_key_id=key_id,
                    product_id=product_id,
                    order_id=order_id,
                    expires_at=until,
                )
                for key_id in key_ids
            )
            await session.flush()
    except IntegrityError:
        return False
    return True


async def held_for(session: AsyncSession, order_id: uuid.UUID) -> dict[uuid.UUID, int]:
    """How many keys of each product the order holds (lapsed or not, while not deleted)."""
    rows = await session.execute(
        select(StockHold.product_id, func.count())
        .where(StockHold.order_id == order_id)
        .group_by(StockHold.product_id)
    )
    return {product_id: int(count) for product_id, count in rows.all()}


async def extend_holds(session: AsyncSession, order_id: uuid.UUID, until: datetime) -> None:
    """The order's holds last at least until `until` (a payment opened for it)."""
    await session.execute(
        update(StockHold)
        .where(
            StockHold.order_id == order_id,
            StockHold.expires_at.is_not(None),
            StockHold.expires_at < until,
        )
        .values(expires_at=until)
    )


async def keep_holds(session: AsyncSession, order_id: uuid.UUID) -> None:
    """The order is paid: its holds (lapsed ones not deleted yet too) stay until fulfilment."""
    await session.execute(
        update(StockHold).where(StockHold.order_id == order_id).values(expires_at=None)
    )


async def assign_held_keys(session: AsyncSession, order_id: uuid.UUID) -> None:
    """Gives the order the keys it holds, and ends its holds."""
    held = select(StockHold.licence_key_id).where(StockHold.order_id == order_id)
    await session.execute(
        update(LicenceKey)
        .where(LicenceKey.id.in_(held), LicenceKey.order_id.is_(None))
        .values(order_id=order_id, assigned_at=utcnow())
    )
    await session.execute(delete(StockHold).where(StockHold.order_id == order_id))


async def release_holds_of(session: AsyncSession, order_id: uuid.UUID) -> None:
    """The order will never take its keys (refunded): its holds end now, kept ones too."""
    await session.execute(delete(StockHold).where(StockHold.order_id == order_id))


async def release_lapsed_holds(session: AsyncSession, now: datetime) -> int:
    """Deletes holds that lapsed (the worker's housekeeping); returns how many."""
    result = await session.execute(
        delete(StockHold)
        .where(StockHold.expires_at.is_not(None), StockHold.expires_at < now)
        .returning(StockHold.id)
    )
    return len(result.all())

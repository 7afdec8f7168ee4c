"""All SQL of the catalogue."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, delete, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.catalogue.models import LicenceKey, Product, StockHold
from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.dialects import dialect_name, insert


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


async def add_keys(session: AsyncSession, product_id: uuid.UUID, secrets: Sequence[str]) -> int:
    """Insert the keys the product does not have yet; returns how many were new."""
    if not secrets:
        return 0
    statement = (
        insert(session, LicenceKey)
        .values([{"id": uuid.uuid4(), "product_id": product_id, "secret": s} for s in secrets])
        .on_conflict_do_nothing(index_elements=["product_id", "secret"])
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
    await session.execute(
        update(LicenceKey)
        .where(LicenceKey.id.in_(key_ids))
        .values(order_id=order_id, assigned_at=utcnow())
    )
    # A key taken from a lapsed hold of another order: that hold is over.
    await session.execute(delete(StockHold).where(StockHold.licence_key_id.in_(key_ids)))
    return count


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
            await session.execute(delete(StockHold).where(StockHold.licence_key_id.in_(key_ids)))
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


async def release_lapsed_holds(session: AsyncSession, now: datetime) -> int:
    """Deletes holds that lapsed (the worker's housekeeping); returns how many."""
    result = await session.execute(
        delete(StockHold)
        .where(StockHold.expires_at.is_not(None), StockHold.expires_at < now)
        .returning(StockHold.id)
    )
    return len(result.all())

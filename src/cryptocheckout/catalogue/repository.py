"""All SQL of the catalogue."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.catalogue.models import LicenceKey, Product
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


async def stock(session: AsyncSession, product_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Unassigned licence keys per product (0 for a product with none)."""
    wanted = set(product_ids)
    if not wanted:
        return {}
    rows = await session.execute(
        select(LicenceKey.product_id, func.count())
        .where(LicenceKey.product_id.in_(wanted), LicenceKey.order_id.is_(None))
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
    free = (
        select(LicenceKey.id)
        .where(LicenceKey.product_id == product_id, LicenceKey.order_id.is_(None))
        .order_by(LicenceKey.created_at)
        .limit(count)
    )
    if dialect_name(session) == "postgresql":
        free = free.with_for_update(skip_locked=True)
    key_ids = list((await session.execute(free)).scalars())
    if len(key_ids) < count:
        return len(key_ids)
    await session.execute(
        update(LicenceKey)
        .where(LicenceKey.id.in_(key_ids))
        .values(order_id=order_id, assigned_at=utcnow())
    )
    return count

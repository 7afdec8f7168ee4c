"""Catalogue rules: product creation and edits, stock of licence keys."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.catalogue import repository
from cryptocheckout.catalogue.models import Product
from cryptocheckout.catalogue.schemas import AdminProductOut, ProductCreate, ProductUpdate
from cryptocheckout.kit.encryption import KeyRing
from cryptocheckout.kit.errors import InvalidPrice, NotFound, SkuTaken


async def admin_view(session: AsyncSession, product: Product) -> AdminProductOut:
    stock = (await repository.stock(session, [product.id]))[product.id]
    return AdminProductOut(
        id=product.id,
        sku=product.sku,
        name=product.name,
        price=product.price,
        currency=product.currency,
        in_stock=stock > 0,
        active=product.active,
        stock=stock,
        created_at=product.created_at,
        updated_at=product.updated_at,
    )


async def create_product(session: AsyncSession, data: ProductCreate) -> Product:
    if await repository.get_by_sku(session, data.sku) is not None:
        raise SkuTaken(data.sku)
    product = Product(
        sku=data.sku,
        name=data.name,
        price=data.price,
        currency=data.currency,
        active=data.active,
    )
    _check_price(product.price)
    session.add(product)
    try:
        await session.flush()
    except IntegrityError:
        # Another request created the same sku since the check above.
        raise SkuTaken(data.sku) from None
    return product


async def update_product(
    session: AsyncSession, product_id: uuid.UUID, data: ProductUpdate
) -> Product:
    product = await repository.get(session, product_id)
    if product is None:
        raise NotFound("product")
    if data.name is not None:
        product.name = data.name
    if data.price is not None:
        product.price = data.price
        _check_price(product.price)
    if data.currency is not None:
        product.currency = data.currency
    if data.active is not None:
        product.active = data.active
    await session.flush()
    return product


async def add_keys(
    session: AsyncSession, ring: KeyRing, product_id: uuid.UUID, keys: list[str]
) -> tuple[int, int]:
    """Adds licence keys, encrypted; returns (added, duplicates), repeats in the request too.

    A key is a duplicate when the product has its keyed hash under any key of the ring, so
    keys stored before a rotation are still recognised.
    """
    if await repository.get(session, product_id) is None:
        raise NotFound("product")
    unique = list(dict.fromkeys(keys))
    owner = product_id.bytes
    candidates = {key: ring.hashes(owner, key) for key in unique}
    known = await repository.existing_key_hashes(
        session, product_id, [h for hashes in candidates.values() for h in hashes]
    )
    new_keys = [key for key, hashes in candidates.items() if known.isdisjoint(hashes)]
    rows = []
    for key in new_keys:
        row_id = uuid.uuid4()
        rows.append((row_id, ring.seal(key, product_id=owner, row_id=row_id.bytes)))
    added = await repository.add_keys(session, product_id, rows)
    return added, len(keys) - added


@dataclass(frozen=True)
class DeliveredKey:
    product_name: str
    key: str

    def __repr__(self) -> str:  # keep keys out of logs and tracebacks
        return f"DeliveredKey(product_name={self.product_name!r})"


async def keys_of_order(
    session: AsyncSession, ring: KeyRing, order_id: uuid.UUID
) -> list[DeliveredKey]:
    """The order's licence keys in plain text, for its delivery page only."""
    return [
        DeliveredKey(product_name=name, key=ring.open(ciphertext, row_id=key_id.bytes))
        for key_id, ciphertext, name in await repository.keys_of_order(session, order_id)
    ]


async def rotate_keys_batch(session: AsyncSession, ring: KeyRing, *, limit: int = 200) -> int:
    """Re-encrypts up to `limit` stored keys under the ring's first key; returns how many.

    Each batch is its own transaction (the caller commits), so a rotation can stop anywhere
    and start again: the rows still to do are exactly those whose `key_id` is not current.
    """
    current = ring.current.key_id
    done = 0
    for key_id, product_id, ciphertext, old_key_id in await repository.keys_to_rotate(
        session, current, limit
    ):
        plain = ring.open(ciphertext, row_id=key_id.bytes)
        sealed = ring.seal(plain, product_id=product_id.bytes, row_id=key_id.bytes)
        if await repository.reseal_key(session, key_id, old_key_id, sealed):
            done += 1
    return done


def _check_price(price: Decimal) -> None:
    if price <= 0:
        raise InvalidPrice()

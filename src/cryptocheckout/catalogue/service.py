"""Catalogue rules: product creation and edits, stock of licence keys."""

from __future__ import annotations

import uuid
from decimal import Decimal

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.catalogue import repository
from cryptocheckout.catalogue.models import Product
from cryptocheckout.catalogue.schemas import AdminProductOut, ProductCreate, ProductUpdate
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
    session: AsyncSession, product_id: uuid.UUID, keys: list[str]
) -> tuple[int, int]:
    """Adds licence keys; returns (added, duplicates), counting repeats within the request too."""
    if await repository.get(session, product_id) is None:
        raise NotFound("product")
    unique = list(dict.fromkeys(keys))
    added = await repository.add_keys(session, product_id, unique)
    return added, len(keys) - added


def _check_price(price: Decimal) -> None:
    if price <= 0:
        raise InvalidPrice()

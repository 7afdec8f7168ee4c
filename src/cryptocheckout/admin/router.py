from __future__ import annotations

import uuid

from fastapi import APIRouter, Depends

from cryptocheckout.catalogue import service as catalogue
from cryptocheckout.catalogue.schemas import (
    AdminProductOut,
    KeysAdded,
    KeysIn,
    ProductCreate,
    ProductUpdate,
)
from cryptocheckout.kit.db import unit_of_work
from cryptocheckout.kit.http import SessionMaker
from cryptocheckout.kit.security import require_admin

router = APIRouter(prefix="/api/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@router.post("/products", status_code=201, response_model=AdminProductOut)
async def create_product(data: ProductCreate, sessionmaker: SessionMaker) -> AdminProductOut:
    async with unit_of_work(sessionmaker) as session:
        product = await catalogue.create_product(session, data)
        view = await catalogue.admin_view(session, product)
        await session.commit()
    return view


@router.patch("/products/{product_id}", response_model=AdminProductOut)
async def update_product(
    product_id: uuid.UUID, data: ProductUpdate, sessionmaker: SessionMaker
) -> AdminProductOut:
    async with unit_of_work(sessionmaker) as session:
        product = await catalogue.update_product(session, product_id, data)
        view = await catalogue.admin_view(session, product)
        await session.commit()
    return view


@router.post("/products/{product_id}/keys", status_code=201, response_model=KeysAdded)
async def add_keys(product_id: uuid.UUID, data: KeysIn, sessionmaker: SessionMaker) -> KeysAdded:
    async with unit_of_work(sessionmaker) as session:
        added, duplicates = await catalogue.add_keys(session, product_id, data.keys)
        await session.commit()
    return KeysAdded(added=added, duplicates=duplicates)

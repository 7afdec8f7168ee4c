from __future__ import annotations

from fastapi import APIRouter

from cryptocheckout.catalogue import repository
from cryptocheckout.catalogue.schemas import ProductList, ProductOut
from cryptocheckout.kit.db import read_only
from cryptocheckout.kit.http import SessionMaker

router = APIRouter(tags=["catalogue"])


@router.get("/api/products", response_model=ProductList)
async def list_products(sessionmaker: SessionMaker) -> ProductList:
    async with read_only(sessionmaker) as session:
        products = await repository.list_active(session)
        stock = await repository.stock(session, (p.id for p in products))
    return ProductList(
        items=[
            ProductOut(
                id=p.id,
                sku=p.sku,
                name=p.name,
                price=p.price,
                currency=p.currency,
                in_stock=stock[p.id] > 0,
            )
            for p in products
        ]
    )

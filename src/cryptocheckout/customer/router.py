from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query

from cryptocheckout.customer.schemas import OrderView
from cryptocheckout.customer.views import order_view
from cryptocheckout.delivery.wiring import Links
from cryptocheckout.kit.db import read_only
from cryptocheckout.kit.errors import NotFound
from cryptocheckout.kit.http import SessionMaker
from cryptocheckout.orders import service as orders

router = APIRouter(tags=["orders"])


@router.get("/api/orders/{order_id}", response_model=OrderView)
async def get_order(
    order_id: str,
    sessionmaker: SessionMaker,
    links: Links,
    x_order_token: Annotated[str | None, Header()] = None,
    token: Annotated[str | None, Query(max_length=200)] = None,
) -> OrderView:
    async with read_only(sessionmaker) as session:
        order = await orders.get_for_customer(session, order_id, x_order_token or token)
        if order is None:
            raise NotFound("order")
        return await order_view(session, order, links)

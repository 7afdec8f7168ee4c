from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.kit.db import unit_of_work
from cryptocheckout.kit.http import SessionMaker
from cryptocheckout.kit.idempotency import request_fingerprint, run_idempotent
from cryptocheckout.kit.problems import not_found
from cryptocheckout.orders import service
from cryptocheckout.orders.schemas import CreatedOrderOut, OrderCreate, OrderView, order_fields
from cryptocheckout.payments import queries as payment_queries

router = APIRouter(tags=["orders"])


@router.post("/api/orders", status_code=201, response_model=CreatedOrderOut)
async def create_order(
    data: OrderCreate,
    sessionmaker: SessionMaker,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    async def operation(session: AsyncSession) -> tuple[int, dict[str, Any]]:
        order = await service.create_order(session, data)
        body = CreatedOrderOut(**order_fields(order), access_token=order.access_token)
        return 201, body.model_dump(mode="json")

    status, body = await run_idempotent(
        sessionmaker,
        scope="POST /api/orders",
        key=idempotency_key,
        request_hash=request_fingerprint(data.model_dump(mode="json")),
        operation=operation,
    )
    return JSONResponse(body, status_code=status)


@router.get("/api/orders/{order_id}", response_model=OrderView)
async def get_order(
    order_id: str,
    request: Request,
    sessionmaker: SessionMaker,
    x_order_token: Annotated[str | None, Header()] = None,
    token: Annotated[str | None, Query(max_length=200)] = None,
) -> OrderView:
    async with unit_of_work(sessionmaker) as session:
        order = await service.get_for_customer(session, order_id, x_order_token or token)
        if order is None:
            raise not_found("order")
        payment = await payment_queries.current_summary(session, order.id)
    return OrderView(**order_fields(order), payment=payment, delivery_url=None)

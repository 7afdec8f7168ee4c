from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.kit.http import AppSettings, SessionMaker
from cryptocheckout.kit.idempotency import request_fingerprint, run_idempotent
from cryptocheckout.orders import service
from cryptocheckout.orders.schemas import CreatedOrderOut, OrderCreate, order_fields

router = APIRouter(tags=["orders"])


@router.post("/api/orders", status_code=201, response_model=CreatedOrderOut)
async def create_order(
    data: OrderCreate,
    sessionmaker: SessionMaker,
    settings: AppSettings,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    async def operation(session: AsyncSession) -> tuple[int, dict[str, Any]]:
        order = await service.create_order(session, data, hold_until=settings.stock_hold_until())
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

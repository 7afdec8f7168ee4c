from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse

from cryptocheckout.kit.http import AppSettings, SessionMaker
from cryptocheckout.kit.idempotency import request_fingerprint, run_idempotent_self_committing
from cryptocheckout.nowpayments.client import NowPaymentsClient
from cryptocheckout.payments import service
from cryptocheckout.payments.schemas import PaymentCreate, PaymentOut

router = APIRouter(tags=["payments"])


def get_nowpayments(request: Request) -> NowPaymentsClient:
    """The app's NOWPayments client (one connection pool per process)."""
    client: NowPaymentsClient = request.app.state.nowpayments
    return client


NowPayments = Annotated[NowPaymentsClient, Depends(get_nowpayments)]


@router.post(
    "/api/payments",
    status_code=201,
    response_model=PaymentOut,
    responses={
        200: {"model": PaymentOut, "description": "The order's open payment, returned again."},
        502: {"description": "NOWPayments refused or did not answer; see provider_code."},
    },
)
async def create_payment(
    data: PaymentCreate,
    sessionmaker: SessionMaker,
    nowpayments: NowPayments,
    settings: AppSettings,
    x_order_token: Annotated[str | None, Header()] = None,
    token: Annotated[str | None, Query(max_length=200)] = None,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    # Creating a payment commits before and after calling NOWPayments (payments/service.py).
    async def operation() -> tuple[int, dict[str, Any]]:
        created = await service.create_payment(
            sessionmaker,
            nowpayments,
            settings,
            order_id=data.order_id,
            token=x_order_token or token,
            pay_currency=data.pay_currency,
        )
        body = PaymentOut.model_validate(created.payment).model_dump(mode="json")
        return (201 if created.new else 200), body

    status, body = await run_idempotent_self_committing(
        sessionmaker,
        scope="POST /api/payments",
        key=idempotency_key,
        request_hash=request_fingerprint(data.model_dump(mode="json")),
        operation=operation,
    )
    return JSONResponse(body, status_code=status)

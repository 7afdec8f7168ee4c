from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import StringConstraints

from cryptocheckout.kit.schemas import MoneyOut, RequestModel, ResponseModel
from cryptocheckout.payments.models import PaymentStatus

PayCurrency = Annotated[
    str, StringConstraints(strict=True, pattern=r"^[A-Za-z0-9]{2,20}$", to_lower=True)
]


class PaymentCreate(RequestModel):
    order_id: Annotated[str, StringConstraints(strict=True, max_length=64)]
    pay_currency: PayCurrency | None = None


class PaymentOut(ResponseModel):
    id: uuid.UUID
    order_id: uuid.UUID
    provider: str
    status: PaymentStatus
    provider_status: str | None
    external_id: str | None
    invoice_id: str | None
    payment_url: str | None
    price_amount: MoneyOut
    price_currency: str
    pay_currency: str | None
    pay_amount: MoneyOut | None
    pay_address: str | None
    payin_extra_id: str | None
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


class PaymentSummary(ResponseModel):
    """A payment as its customer sees it on the order."""

    id: uuid.UUID
    status: PaymentStatus
    provider_status: str | None
    payment_url: str | None
    pay_amount: MoneyOut | None
    pay_currency: str | None
    pay_address: str | None
    expires_at: datetime | None

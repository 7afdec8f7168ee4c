from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import EmailStr, Field, StringConstraints

from cryptocheckout.kit.schemas import MoneyOut, RequestModel, ResponseModel
from cryptocheckout.orders.models import Order, OrderStatus

ProductRef = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=64)]


class OrderItemIn(RequestModel):
    product_id: ProductRef
    quantity: int = Field(strict=True, ge=1, le=100)


class OrderCreate(RequestModel):
    email: EmailStr = Field(max_length=320)
    items: list[OrderItemIn] = Field(min_length=1, max_length=50)


class OrderItemOut(ResponseModel):
    product_id: uuid.UUID
    sku: str
    name: str
    quantity: int
    unit_price: MoneyOut


class OrderOut(ResponseModel):
    id: uuid.UUID
    status: OrderStatus
    email: str
    total: MoneyOut
    currency: str
    items: list[OrderItemOut]
    created_at: datetime
    updated_at: datetime


class CreatedOrderOut(OrderOut):
    access_token: str


def order_fields(order: Order) -> dict[str, Any]:
    """The fields every view of an order shares (OrderOut's)."""
    return {
        "id": order.id,
        "status": order.status,
        "email": order.email,
        "total": order.total,
        "currency": order.currency,
        "items": [OrderItemOut.model_validate(item) for item in order.items],
        "created_at": order.created_at,
        "updated_at": order.updated_at,
    }

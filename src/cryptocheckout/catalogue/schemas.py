from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from cryptocheckout.kit.schemas import (
    Currency,
    MoneyIn,
    MoneyOut,
    RequestModel,
    ResponseModel,
    SafeText,
)

Sku = Annotated[str, StringConstraints(strict=True, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Name = Annotated[SafeText, StringConstraints(strict=True, min_length=1, max_length=200)]
KeyText = Annotated[SafeText, StringConstraints(strict=True, min_length=1, max_length=512)]


class ProductOut(ResponseModel):
    id: uuid.UUID
    sku: str
    name: str
    price: MoneyOut
    currency: str
    in_stock: bool


class ProductList(ResponseModel):
    items: list[ProductOut]


class AdminProductOut(ProductOut):
    active: bool
    stock: int
    created_at: datetime
    updated_at: datetime


class ProductCreate(RequestModel):
    sku: Sku
    name: Name
    price: MoneyIn
    currency: Currency
    active: bool = Field(default=True, strict=True)


class ProductUpdate(RequestModel):
    name: Name | None = None
    price: MoneyIn | None = None
    currency: Currency | None = None
    active: bool | None = Field(default=None, strict=True)


class KeysIn(RequestModel):
    keys: list[KeyText] = Field(min_length=1, max_length=1000)


class KeysAdded(ResponseModel):
    added: int
    duplicates: int

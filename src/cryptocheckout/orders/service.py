"""Order rules: prices and totals come from the catalogue, never from the client."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.catalogue import repository as catalogue
from cryptocheckout.kit.errors import (
    FieldIssue,
    MixedCurrencies,
    OutOfStock,
    TotalTooLarge,
    UnorderableItems,
)
from cryptocheckout.kit.money import to_money
from cryptocheckout.kit.security import new_access_token, tokens_match
from cryptocheckout.orders import repository
from cryptocheckout.orders.models import Order, OrderItem, OrderStatus
from cryptocheckout.orders.schemas import OrderCreate


async def create_order(session: AsyncSession, data: OrderCreate, *, hold_until: datetime) -> Order:
    """Prices the order from the catalogue and holds its keys until `hold_until` (checkout's
    STOCK_HOLD_MINUTES plus STOCK_HOLD_GRACE_MINUTES; a payment opened for it extends the
    hold). More than the free (unheld) stock is refused with `OutOfStock`."""
    errors: list[FieldIssue] = []
    product_ids: list[uuid.UUID | None] = []
    for index, item in enumerate(data.items):
        try:
            product_ids.append(uuid.UUID(item.product_id))
        except ValueError:
            product_ids.append(None)
            errors.append(
                FieldIssue(
                    ("items", index, "product_id"),
                    f"unknown product {item.product_id!r}",
                    "unknown_product",
                )
            )
    products = await catalogue.get_many(session, (pid for pid in product_ids if pid))
    for index, (item, pid) in enumerate(zip(data.items, product_ids, strict=True)):
        if pid is None:
            continue
        product = products.get(pid)
        if product is None:
            errors.append(
                FieldIssue(
                    ("items", index, "product_id"),
                    f"unknown product {item.product_id!r}",
                    "unknown_product",
                )
            )
        elif not product.active:
            errors.append(
                FieldIssue(
                    ("items", index, "product_id"),
                    f"product {product.sku!r} is not for sale",
                    "inactive_product",
                )
            )
    if errors:
        raise UnorderableItems("Some items cannot be ordered.", errors)

    ids = [pid for pid in product_ids if pid is not None]
    currencies = {products[pid].currency for pid in ids}
    if len(currencies) > 1:
        raise MixedCurrencies(
            "All items of an order must be priced in one currency.",
            [FieldIssue(("items",), f"mixed currencies: {', '.join(sorted(currencies))}")],
        )

    wanted: Counter[uuid.UUID] = Counter()
    for item, pid in zip(data.items, ids, strict=True):
        wanted[pid] += item.quantity
    available = await catalogue.stock(session, wanted)
    for index, pid in enumerate(ids):
        if wanted[pid] > available[pid]:
            errors.append(
                FieldIssue(
                    ("items", index, "quantity"),
                    f"only {available[pid]} of {products[pid].sku!r} in stock",
                    "out_of_stock",
                )
            )
    if errors:
        raise OutOfStock("Some items are out of stock.", errors)

    order = Order(
        email=data.email,
        status=OrderStatus.CREATED,
        currency=currencies.pop(),
        total=to_money(0),
        access_token=new_access_token(),
        items=[],
    )
    total = to_money(0)
    for position, (item, pid) in enumerate(zip(data.items, ids, strict=True)):
        product = products[pid]
        order.items.append(
            OrderItem(
                product_id=product.id,
                position=position,
                sku=product.sku,
                name=product.name,
                quantity=item.quantity,
                unit_price=product.price,
            )
        )
        total += product.price * item.quantity
    try:
        order.total = to_money(total)
    except ValueError:
        raise TotalTooLarge(
            "The order total is too large.",
            [FieldIssue(("items",), "the total exceeds what one order can hold")],
        ) from None
    session.add(order)
    await session.flush()
    for pid, quantity in wanted.items():
        if not await catalogue.hold_keys(session, pid, order.id, quantity, until=hold_until):
            # Another checkout held the last keys since we counted them.
            raise OutOfStock(
                "Some items are out of stock.",
                [
                    FieldIssue(
                        ("items", ids.index(pid), "quantity"),
                        f"{products[pid].sku!r} was just sold out",
                        "out_of_stock",
                    )
                ],
            )
    return order


async def get_for_customer(session: AsyncSession, order_id: str, token: str | None) -> Order | None:
    """The order if the token opens it; None for a wrong id or token alike (no oracle)."""
    try:
        parsed = uuid.UUID(order_id)
    except ValueError:
        return None
    order = await repository.get_with_items(session, parsed)
    if order is None or not tokens_match(token, order.access_token):
        return None
    return order

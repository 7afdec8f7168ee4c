"""The customer's view of an order, shared by the API and the pages.

It joins what lower packages know of the order (its items, its payments), so it lives
above all of them.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.customer.schemas import OrderView
from cryptocheckout.delivery.links import DeliveryLinks
from cryptocheckout.kit.clock import utcnow
from cryptocheckout.orders.models import Order, OrderStatus
from cryptocheckout.orders.schemas import order_fields
from cryptocheckout.payments import queries as payments


async def order_view(session: AsyncSession, order: Order, links: DeliveryLinks | None) -> OrderView:
    """The order as its customer sees it; `links` signs the delivery link once fulfilled."""
    payment = await payments.current_summary(session, order.id)
    balance = await payments.balance_of(session, order)
    return OrderView(
        **order_fields(order),
        payment=payment,
        delivery_url=delivery_url(order, links),
        amount_paid=balance.paid,
        amount_due=balance.due,
        amount_over=balance.over,
    )


def delivery_url(order: Order, links: DeliveryLinks | None) -> str | None:
    """A fresh link to the keys of a fulfilled order (the caller holds the order's token)."""
    if links is None or order.status is not OrderStatus.FULFILLED:
        return None
    return links.url(order.id, utcnow())

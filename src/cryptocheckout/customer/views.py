"""The customer's view of an order, shared by the API and the pages.

It joins what lower packages know of the order (its items, its payments), so it lives
above all of them.
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from cryptocheckout.customer.schemas import OrderView
from cryptocheckout.orders.models import Order
from cryptocheckout.orders.schemas import order_fields
from cryptocheckout.payments import queries as payments


async def order_view(session: AsyncSession, order: Order) -> OrderView:
    payment = await payments.current_summary(session, order.id)
    balance = await payments.balance_of(session, order)
    return OrderView(
        **order_fields(order),
        payment=payment,
        delivery_url=None,
        amount_paid=balance.paid,
        amount_due=balance.due,
        amount_over=balance.over,
    )

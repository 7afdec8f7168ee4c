from __future__ import annotations

from cryptocheckout.kit.schemas import MoneyOut
from cryptocheckout.orders.schemas import OrderOut
from cryptocheckout.payments.schemas import PaymentSummary


class OrderView(OrderOut):
    """`GET /api/orders/{id}`: the order, its current payment and, once fulfilled, its link."""

    payment: PaymentSummary | None
    delivery_url: str | None
    # In the order's currency: what its payments credited, what is still due (0 once paid)
    # and what they credited beyond its total.
    amount_paid: MoneyOut
    amount_due: MoneyOut
    amount_over: MoneyOut

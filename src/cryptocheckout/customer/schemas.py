from __future__ import annotations

from cryptocheckout.orders.schemas import OrderOut
from cryptocheckout.payments.schemas import PaymentSummary


class OrderView(OrderOut):
    """`GET /api/orders/{id}`: the order, its current payment and, once fulfilled, its link."""

    payment: PaymentSummary | None
    delivery_url: str | None

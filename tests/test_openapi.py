"""The API's description names every status a client can receive."""

from __future__ import annotations

import httpx

from cryptocheckout.orders.models import OrderStatus
from cryptocheckout.payments.models import PaymentStatus


async def test_openapi_lists_the_status_values(client: httpx.AsyncClient) -> None:
    schemas = (await client.get("/openapi.json")).json()["components"]["schemas"]
    assert schemas["OrderStatus"]["enum"] == [status.value for status in OrderStatus]
    assert schemas["PaymentStatus"]["enum"] == [status.value for status in PaymentStatus]
    for name in ("OrderView", "CreatedOrderOut"):
        assert schemas[name]["properties"]["status"] == {"$ref": "#/components/schemas/OrderStatus"}
    assert schemas["PaymentOut"]["properties"]["status"] == {
        "$ref": "#/components/schemas/PaymentStatus"
    }
    assert "duplicate" not in schemas["WebhookLogStatus"]["enum"]

"""Orders: priced from the catalogue, opened with their token, idempotent on request."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.idempotency_models import IdempotencyKey, IdempotencyState
from cryptocheckout.orders.models import Order
from tests.conftest import Admin


async def _count_orders(sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    async with sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(Order))).scalar_one())


def _order_body(product_id: str, quantity: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "email": "buyer@example.com",
        "items": [{"product_id": product_id, "quantity": quantity, **extra}],
    }


async def test_order_is_priced_from_the_catalogue(client: httpx.AsyncClient, admin: Admin) -> None:
    game = await admin.product(sku="GAME", price="12.50")
    dlc = await admin.product(sku="DLC", price="0.30000003")
    response = await client.post(
        "/api/orders",
        json={
            "email": "buyer@example.com",
            "items": [
                {"product_id": game["id"], "quantity": 2, "unit_price": "0.01", "price": "0.01"},
                {"product_id": dlc["id"], "quantity": 3},
            ],
            "total": "0.01",
        },
    )
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["total"] == "25.90000009"
    assert order["currency"] == "USD"
    assert order["status"] == "created"
    assert [(i["quantity"], i["unit_price"]) for i in order["items"]] == [
        (2, "12.50"),
        (3, "0.30000003"),
    ]
    assert len(order["access_token"]) >= 32
    assert order["created_at"].endswith("Z") or order["created_at"].endswith("+00:00")


async def test_order_is_read_with_its_token_only(client: httpx.AsyncClient, admin: Admin) -> None:
    product = await admin.product()
    order = (await client.post("/api/orders", json=_order_body(product["id"]))).json()
    by_header = await client.get(
        f"/api/orders/{order['id']}", headers={"X-Order-Token": order["access_token"]}
    )
    assert by_header.status_code == 200
    assert by_header.json()["total"] == "12.50"
    assert by_header.json()["payment"] is None
    assert "access_token" not in by_header.json()
    by_query = await client.get(
        f"/api/orders/{order['id']}", params={"token": order["access_token"]}
    )
    assert by_query.status_code == 200

    for url, headers in [
        (f"/api/orders/{order['id']}", {}),
        (f"/api/orders/{order['id']}", {"X-Order-Token": "wrong"}),
        (f"/api/orders/{order['id']}", {"X-Order-Token": order["access_token"][:-1]}),
        (f"/api/orders/{uuid.uuid4()}", {"X-Order-Token": order["access_token"]}),
        ("/api/orders/not-a-uuid", {"X-Order-Token": order["access_token"]}),
    ]:
        response = await client.get(url, headers=headers)
        assert response.status_code == 404, url
        assert response.headers["content-type"] == "application/problem+json"


async def test_unknown_and_inactive_products_are_named(
    client: httpx.AsyncClient, admin: Admin
) -> None:
    active = await admin.product(sku="ON")
    inactive = await admin.product(sku="OFF", active=False)
    missing = str(uuid.uuid4())
    response = await client.post(
        "/api/orders",
        json={
            "email": "buyer@example.com",
            "items": [
                {"product_id": active["id"], "quantity": 1},
                {"product_id": missing, "quantity": 1},
                {"product_id": inactive["id"], "quantity": 1},
                {"product_id": "nonsense", "quantity": 1},
            ],
        },
    )
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert [e["loc"] for e in errors] == [
        ["body", "items", 3, "product_id"],
        ["body", "items", 1, "product_id"],
        ["body", "items", 2, "product_id"],
    ] or sorted(tuple(e["loc"]) for e in errors) == sorted(
        [
            ("body", "items", 1, "product_id"),
            ("body", "items", 2, "product_id"),
            ("body", "items", 3, "product_id"),
        ]
    )
    messages = " ".join(e["msg"] for e in errors)
    assert missing in messages and "OFF" in messages and "nonsense" in messages


async def test_stock_limits_quantity(client: httpx.AsyncClient, admin: Admin) -> None:
    product = await admin.product(keys=2)
    body = {"email": "b@example.com", "items": [{"product_id": product["id"], "quantity": 2}] * 2}
    response = await client.post("/api/orders", json=body)
    assert response.status_code == 422
    assert "only 2" in response.json()["errors"][0]["msg"]


async def test_mixed_currencies_are_refused(client: httpx.AsyncClient, admin: Admin) -> None:
    usd = await admin.product(sku="USD1", currency="USD")
    eur = await admin.product(sku="EUR1", currency="EUR")
    body = {
        "email": "b@example.com",
        "items": [
            {"product_id": usd["id"], "quantity": 1},
            {"product_id": eur["id"], "quantity": 1},
        ],
    }
    response = await client.post("/api/orders", json=body)
    assert response.status_code == 422
    assert "currenc" in response.json()["detail"]


async def test_same_key_same_body_returns_the_stored_response(
    client: httpx.AsyncClient, admin: Admin, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    product = await admin.product()
    body = _order_body(product["id"])
    first = await client.post("/api/orders", json=body, headers={"Idempotency-Key": "abc-1"})
    # same meaning, other spacing and key order
    again = await client.post(
        "/api/orders",
        content='{{"items": [{{"quantity": 1, "product_id": "{}"}}], "email": "buyer@example.com"}}'.format(
            product["id"]
        ),
        headers={"Idempotency-Key": "abc-1", "Content-Type": "application/json"},
    )
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert await _count_orders(sessionmaker) == 1

    other = await client.post(
        "/api/orders", json=_order_body(product["id"], 2), headers={"Idempotency-Key": "abc-1"}
    )
    assert other.status_code == 422
    assert await _count_orders(sessionmaker) == 1

    # keys are per endpoint and per key: another key makes another order
    fresh = await client.post("/api/orders", json=body, headers={"Idempotency-Key": "abc-2"})
    assert fresh.status_code == 201 and fresh.json()["id"] != first.json()["id"]


async def test_a_failed_request_releases_its_key(client: httpx.AsyncClient, admin: Admin) -> None:
    product = await admin.product(keys=1)
    body = _order_body(product["id"], quantity=5)
    refused = await client.post("/api/orders", json=body, headers={"Idempotency-Key": "retry-me"})
    assert refused.status_code == 422
    await client.post(
        f"/api/admin/products/{product['id']}/keys",
        json={"keys": list("abcd")},
        headers=admin.headers,
    )
    accepted = await client.post("/api/orders", json=body, headers={"Idempotency-Key": "retry-me"})
    assert accepted.status_code == 201


async def test_key_in_progress_is_409_until_its_lock_runs_out(
    client: httpx.AsyncClient, admin: Admin, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    from cryptocheckout.kit.idempotency import request_fingerprint
    from cryptocheckout.orders.schemas import OrderCreate

    product = await admin.product()
    body = _order_body(product["id"])
    digest = request_fingerprint(OrderCreate.model_validate(body).model_dump(mode="json"))
    async with sessionmaker() as session:
        row = IdempotencyKey(
            scope="POST /api/orders",
            key="busy",
            request_hash=digest,
            state=IdempotencyState.IN_PROGRESS,
            locked_until=utcnow() + timedelta(seconds=30),
            expires_at=utcnow() + timedelta(hours=24),
        )
        session.add(row)
        await session.commit()
    busy = await client.post("/api/orders", json=body, headers={"Idempotency-Key": "busy"})
    assert busy.status_code == 409
    assert await _count_orders(sessionmaker) == 0

    async with sessionmaker() as session:
        stored = await session.get(IdempotencyKey, row.id)
        assert stored is not None
        stored.locked_until = utcnow() - timedelta(seconds=1)  # the first request died
        await session.commit()
    taken_over = await client.post("/api/orders", json=body, headers={"Idempotency-Key": "busy"})
    assert taken_over.status_code == 201


async def test_concurrent_identical_requests_create_one_order(
    client: httpx.AsyncClient, admin: Admin, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    product = await admin.product(keys=50)
    body = _order_body(product["id"])
    responses = await asyncio.gather(
        *[
            client.post("/api/orders", json=body, headers={"Idempotency-Key": "same"})
            for _ in range(20)
        ]
    )
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409}, statuses
    created = {r.json()["id"] for r in responses if r.status_code == 201}
    assert len(created) == 1
    assert await _count_orders(sessionmaker) == 1


@pytest.mark.parametrize("key", ["", "x" * 256, "with space", "caf\u00e9"])
async def test_invalid_idempotency_keys_are_422(
    client: httpx.AsyncClient, admin: Admin, key: str
) -> None:
    product = await admin.product()
    response = await client.post(
        "/api/orders", json=_order_body(product["id"]), headers=[(b"Idempotency-Key", key.encode())]
    )
    assert response.status_code == 422

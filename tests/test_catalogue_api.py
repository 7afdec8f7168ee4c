"""Products: the public list and the admin endpoints."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN, Admin


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": ADMIN_TOKEN},
        {"Authorization": "Bearer "},
    ],
)
async def test_admin_endpoints_need_the_bearer_token(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post(
        "/api/admin/products",
        json={"sku": "X", "name": "x", "price": "1.00", "currency": "USD"},
        headers=headers,
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert (await client.get("/api/products")).json() == {"items": []}


async def test_create_list_and_edit_a_product(client: httpx.AsyncClient, admin: Admin) -> None:
    product = await admin.product(sku="GAME-1", price="19.99", currency="eur", keys=0)
    assert product["price"] == "19.99"
    assert product["currency"] == "EUR"
    assert product["stock"] == 0 and product["in_stock"] is False and product["active"] is True

    listed = (await client.get("/api/products")).json()["items"]
    assert listed == [
        {
            "id": product["id"],
            "sku": "GAME-1",
            "name": "Product GAME-1",
            "price": "19.99",
            "currency": "EUR",
            "in_stock": False,
        }
    ]

    patched = await client.patch(
        f"/api/admin/products/{product['id']}",
        json={"price": "0.30000003", "name": "Renamed"},
        headers=admin.headers,
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["price"] == "0.30000003"
    assert patched.json()["name"] == "Renamed"

    hidden = await client.patch(
        f"/api/admin/products/{product['id']}", json={"active": False}, headers=admin.headers
    )
    assert hidden.json()["active"] is False
    assert (await client.get("/api/products")).json()["items"] == []


async def test_keys_are_counted_with_duplicates(client: httpx.AsyncClient, admin: Admin) -> None:
    product = await admin.product(keys=0)
    url = f"/api/admin/products/{product['id']}/keys"
    first = await client.post(url, json={"keys": ["A", "B", "A", "C"]}, headers=admin.headers)
    assert first.status_code == 201
    assert first.json() == {"added": 3, "duplicates": 1}
    second = await client.post(url, json={"keys": ["C", "D"]}, headers=admin.headers)
    assert second.json() == {"added": 1, "duplicates": 1}
    listed = (await client.get("/api/products")).json()["items"]
    assert listed[0]["in_stock"] is True


async def test_duplicate_sku_is_a_conflict(client: httpx.AsyncClient, admin: Admin) -> None:
    await admin.product(sku="SAME", keys=0)
    again = await client.post(
        "/api/admin/products",
        json={"sku": "SAME", "name": "x", "price": "1.00", "currency": "USD"},
        headers=admin.headers,
    )
    assert again.status_code == 409
    assert again.json()["errors"][0]["loc"] == ["body", "sku"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"sku": "A", "name": "x", "price": 12.5, "currency": "USD"}, "price"),
        ({"sku": "A", "name": "x", "price": "1e3", "currency": "USD"}, "price"),
        ({"sku": "A", "name": "x", "price": "0.000000001", "currency": "USD"}, "price"),
        ({"sku": "A", "name": "x", "price": "1234567890123.00", "currency": "USD"}, "price"),
        ({"sku": "A", "name": "x", "price": "-1.00", "currency": "USD"}, "price"),
        ({"sku": "A", "name": "x", "price": "NaN", "currency": "USD"}, "price"),
        ({"sku": "A", "name": "x", "price": "0", "currency": "USD"}, "price"),
        ({"sku": "A", "name": "x", "price": "1.00", "currency": "US"}, "currency"),
        ({"sku": "A", "name": "x", "price": "1.00", "currency": "U$D"}, "currency"),
        ({"sku": "a b", "name": "x", "price": "1.00", "currency": "USD"}, "sku"),
        ({"sku": "A", "name": "nul\u0000byte", "price": "1.00", "currency": "USD"}, "name"),
        ({"sku": "A", "name": "", "price": "1.00", "currency": "USD"}, "name"),
        ({"sku": "A", "name": "x" * 201, "price": "1.00", "currency": "USD"}, "name"),
        ({"sku": "A", "name": "x", "price": "1.00", "currency": "USD", "active": "yes"}, "active"),
        ({"name": "x", "price": "1.00", "currency": "USD"}, "sku"),
    ],
)
async def test_bad_product_fields_are_named(
    client: httpx.AsyncClient, admin: Admin, body: dict[str, object], field: str
) -> None:
    response = await client.post("/api/admin/products", json=body, headers=admin.headers)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["status"] == 422
    assert any(error["loc"][-1] == field for error in problem["errors"]), problem


async def test_unknown_product_on_patch_and_keys_is_404(
    client: httpx.AsyncClient, admin: Admin
) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    patched = await client.patch(
        f"/api/admin/products/{missing}", json={"name": "n"}, headers=admin.headers
    )
    assert patched.status_code == 404
    keys = await client.post(
        f"/api/admin/products/{missing}/keys", json={"keys": ["k"]}, headers=admin.headers
    )
    assert keys.status_code == 404
    assert keys.headers["content-type"] == "application/problem+json"

"""The admin API for the console: products with stock, orders, an order's detail, mark as paid."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cryptocheckout.catalogue.models import LicenceKey
from cryptocheckout.worker import Worker
from tests.conftest import ADMIN_TOKEN, Admin
from tests.support.ipn import ipn_payload, signed
from tests.support.shop import Paying, paying_order

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SECRET = "test-ipn-secret"
Sessions = async_sessionmaker[AsyncSession]


async def notify(client: httpx.AsyncClient, paying: Paying, status: str, paid: str) -> None:
    payload = ipn_payload(
        paying.external_id or "1",
        status,
        order_id=str(paying.order_id),
        price_amount=paying.price,
        pay_amount=paying.pay_amount,
        actually_paid=paid,
    )
    body, headers = signed(payload, SECRET)
    response = await client.post("/api/webhooks/nowpayments", content=body, headers=headers)
    assert response.status_code == 200


async def drain(sessionmaker: Sessions) -> None:
    worker = Worker(sessionmaker)
    while await worker.run_once():
        pass


async def underpaid_order(client: httpx.AsyncClient, sessionmaker: Sessions) -> Paying:
    paying = await paying_order(sessionmaker)
    await notify(client, paying, "partially_paid", "0.0003")
    await drain(sessionmaker)
    order = (await client.get(f"/api/admin/orders/{paying.order_id}", headers=ADMIN)).json()
    assert order["status"] == "underpaid"
    return paying


async def test_products_list_every_product_with_its_free_stock(
    client: httpx.AsyncClient, admin: Admin
) -> None:
    await admin.product("A-1", keys=3)
    await admin.product("B-2", keys=0, active=False)
    assert (await client.get("/api/admin/products")).status_code == 401
    items = (await client.get("/api/admin/products", headers=ADMIN)).json()["items"]
    assert sorted((p["sku"], p["stock"], p["active"]) for p in items) == [
        ("A-1", 3, True),
        ("B-2", 0, False),
    ]


async def test_orders_filter_by_status_and_email_and_page(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    payings = [await paying_order(sessionmaker, external_id=str(700 + i)) for i in range(3)]
    await notify(client, payings[0], "partially_paid", "0.0001")
    await drain(sessionmaker)
    underpaid = (
        await client.get("/api/admin/orders", params={"status": "underpaid"}, headers=ADMIN)
    ).json()
    assert [o["id"] for o in underpaid["items"]] == [str(payings[0].order_id)]
    by_email = await client.get(
        "/api/admin/orders", params={"email": "Buyer@Example.com", "limit": 2}, headers=ADMIN
    )
    first = by_email.json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    rest = await client.get(
        "/api/admin/orders",
        params={"email": "buyer@example.com", "cursor": first["next_cursor"]},
        headers=ADMIN,
    )
    seen = {o["id"] for o in first["items"]} | {o["id"] for o in rest.json()["items"]}
    assert seen == {str(p.order_id) for p in payings}
    nobody = await client.get("/api/admin/orders", params={"email": "x@y.z"}, headers=ADMIN)
    assert nobody.json()["items"] == []
    bad = await client.get("/api/admin/orders", params={"status": "lost"}, headers=ADMIN)
    assert bad.status_code == 422


async def test_mark_paid_fulfils_an_underpaid_order_and_records_who_and_why(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    paying = await underpaid_order(client, sessionmaker)
    url = f"/api/admin/orders/{paying.order_id}/mark-paid"
    assert (await client.post(url, json={"reason": "x"})).status_code == 401
    for body in ({"reason": "   "}, {}, {"reason": 5}):
        refused = await client.post(url, json=body, headers=ADMIN)
        assert refused.status_code == 422, refused.text
    detail = (await client.get(f"/api/admin/orders/{paying.order_id}", headers=ADMIN)).json()
    assert detail["status"] == "underpaid"  # nothing changed

    marked = await client.post(url, json={"reason": "rest paid by bank transfer"}, headers=ADMIN)
    assert marked.status_code == 200, marked.text
    assert marked.json()["status"] == "paid"
    await drain(sessionmaker)
    detail = (await client.get(f"/api/admin/orders/{paying.order_id}", headers=ADMIN)).json()
    assert detail["status"] == "fulfilled"
    admin_change = [c for c in detail["timeline"] if c["cause"] == "admin"]
    assert [(c["to_status"], c["cause_ref"], c["note"]) for c in admin_change] == [
        ("paid", "admin API", "rest paid by bank transfer")
    ]
    assert [(a["action"], a["note"]) for a in detail["actions"]] == [
        ("mark_paid", "rest paid by bank transfer")
    ]
    assert [p["status"] for p in detail["payments"]] == ["underpaid"]
    assert ("fulfil_order", "succeeded") in [(j["kind"], j["status"]) for j in detail["jobs"]]
    async with sessionmaker() as session:
        keys = await session.scalar(
            select(func.count()).where(LicenceKey.order_id == paying.order_id)
        )
    assert keys == 1

    again = await client.post(url, json={"reason": "again"}, headers=ADMIN)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"


async def test_mark_paid_refuses_orders_that_are_neither_underpaid_nor_flagged(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    paying = await paying_order(sessionmaker)
    response = await client.post(
        f"/api/admin/orders/{paying.order_id}/mark-paid", json={"reason": "why not"}, headers=ADMIN
    )
    assert response.status_code == 409
    detail = (await client.get(f"/api/admin/orders/{paying.order_id}", headers=ADMIN)).json()
    assert detail["status"] == "waiting" and detail["actions"] == []
    missing = await client.post(
        "/api/admin/orders/00000000-0000-4000-8000-000000000000/mark-paid",
        json={"reason": "x"},
        headers=ADMIN,
    )
    assert missing.status_code == 404

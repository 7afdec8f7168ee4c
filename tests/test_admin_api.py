"""The staff's API: payments, notifications, their timeline, and replaying a notification."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cryptocheckout.worker import Worker
from tests.conftest import ADMIN_TOKEN
from tests.support.ipn import ipn_payload, signed
from tests.support.shop import Paying, paying_order

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SECRET = "test-ipn-secret"
Sessions = async_sessionmaker[AsyncSession]


async def _notify(client: httpx.AsyncClient, paying: Paying, status: str, **extra: object) -> None:
    payload = ipn_payload(
        paying.external_id or "1",
        status,
        order_id=str(paying.order_id),
        price_amount=paying.price,
        pay_amount=paying.pay_amount,
        actually_paid=paying.pay_amount,
        **extra,  # type: ignore[arg-type]
    )
    body, headers = signed(payload, SECRET)
    assert (
        await client.post("/api/webhooks/nowpayments", content=body, headers=headers)
    ).status_code == 200


async def _drain(sessionmaker: Sessions) -> None:
    worker = Worker(sessionmaker)
    while await worker.run_once():
        pass


@pytest.mark.parametrize(
    "path",
    [
        "/api/admin/payments",
        "/api/admin/webhook-logs",
        "/api/admin/rejected-webhooks",
        "/api/admin/payments/00000000-0000-4000-8000-000000000000",
    ],
)
async def test_admin_reads_need_the_token(client: httpx.AsyncClient, path: str) -> None:
    assert (await client.get(path)).status_code == 401
    assert (await client.get(path, headers={"Authorization": "Bearer nope"})).status_code == 401


async def test_payment_detail_has_order_timeline_notifications_and_jobs(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    paying = await paying_order(sessionmaker)
    await _notify(client, paying, "confirming")
    await _notify(client, paying, "finished")
    await _drain(sessionmaker)
    detail = (await client.get(f"/api/admin/payments/{paying.payment_id}", headers=ADMIN)).json()
    assert detail["status"] == "finished"
    assert detail["actually_paid"] == "0.00045"
    assert detail["order"]["status"] == "fulfilled"
    assert detail["order"]["email"] == "buyer@example.com"
    assert [n["provider_status"] for n in detail["notifications"]] == ["confirming", "finished"]
    assert sorted((j["kind"], j["status"]) for j in detail["jobs"]) == [
        ("fulfil_order", "succeeded"),
        ("order_event", "succeeded"),  # order.paid
        ("order_event", "succeeded"),  # order.fulfilled
    ]
    order_changes = [
        (c["to_status"], c["cause"]) for c in detail["timeline"] if c["subject"] == "order"
    ]
    assert order_changes == [
        ("confirming", "notification"),
        ("paid", "notification"),
        ("fulfilled", "worker"),
    ]
    assert all(c["cause_ref"] for c in detail["timeline"] if c["cause"] == "notification")


async def test_lists_filter_and_page(client: httpx.AsyncClient, sessionmaker: Sessions) -> None:
    payings = [await paying_order(sessionmaker, external_id=str(100 + i)) for i in range(5)]
    for paying in payings:
        await _notify(client, paying, "waiting")
    await _notify(client, payings[0], "finished")
    await _drain(sessionmaker)

    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/api/admin/payments", params=params, headers=ADMIN)).json()
        assert len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(str(p.payment_id) for p in payings)
    assert len(seen) == len(set(seen))

    finished = (
        await client.get("/api/admin/payments", params={"status": "finished"}, headers=ADMIN)
    ).json()
    assert [i["external_id"] for i in finished["items"]] == ["100"]
    by_order = await client.get(
        "/api/admin/payments", params={"order_id": str(payings[1].order_id)}, headers=ADMIN
    )
    assert [i["external_id"] for i in by_order.json()["items"]] == ["101"]
    by_email = await client.get(
        "/api/admin/payments", params={"email": "BUYER@example.com"}, headers=ADMIN
    )
    assert len(by_email.json()["items"]) == 5

    logs = (
        await client.get("/api/admin/webhook-logs", params={"external_id": "100"}, headers=ADMIN)
    ).json()
    assert [log["provider_status"] for log in logs["items"]] == ["finished", "waiting"]
    processed = await client.get(
        "/api/admin/webhook-logs", params={"status": "processed", "limit": 100}, headers=ADMIN
    )
    assert len(processed.json()["items"]) == 6


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "x"},
        {"status": "teleported"},
        {"order_id": "nope"},
        {"cursor": "garbage!"},
    ],
)
async def test_bad_list_parameters_are_422(
    client: httpx.AsyncClient, params: dict[str, object]
) -> None:
    response = await client.get("/api/admin/payments", params=params, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"


async def test_replay_is_idempotent_and_repairs(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    paying = await paying_order(sessionmaker, external_id=None)
    # A notification for a payment we did not record: it ends failed after its retries.
    await _notify(client, paying.__class__(**{**paying.__dict__, "external_id": "555"}), "finished")
    logs = (await client.get("/api/admin/webhook-logs", headers=ADMIN)).json()["items"]
    log_id = logs[0]["id"]
    detail = (await client.get(f"/api/admin/webhook-logs/{log_id}", headers=ADMIN)).json()
    assert '"payment_status":"finished"' in detail["raw_body"]
    assert detail["raw_payload"]["payment_id"] == 555

    # Staff link the payment by hand, then replay the stored notification.
    from cryptocheckout.payments.models import Payment

    async with sessionmaker() as session:
        payment = await session.get(Payment, paying.payment_id)
        assert payment is not None
        payment.external_id = "555"
        await session.commit()
    replayed = await client.post(f"/api/admin/webhook-logs/{log_id}/replay", headers=ADMIN)
    assert replayed.status_code == 200
    assert replayed.json()["status"] == "processed"
    again = await client.post(f"/api/admin/webhook-logs/{log_id}/replay", headers=ADMIN)
    assert again.json()["status"] == "processed"
    detail = (await client.get(f"/api/admin/payments/{paying.payment_id}", headers=ADMIN)).json()
    assert detail["status"] == "finished"
    assert [c["cause"] for c in detail["timeline"] if c["to_status"] == "paid"] == ["admin"]
    missing = await client.post(
        "/api/admin/webhook-logs/00000000-0000-4000-8000-000000000000/replay", headers=ADMIN
    )
    assert missing.status_code == 404


async def test_rejected_deliveries_are_visible(client: httpx.AsyncClient) -> None:
    await client.post(
        "/api/webhooks/nowpayments", content=b'{"a": 1}', headers={"x-nowpayments-sig": "00" * 64}
    )
    for _ in range(50):
        items = (await client.get("/api/admin/rejected-webhooks", headers=ADMIN)).json()["items"]
        if items:
            break
        await asyncio.sleep(0.02)
    assert [i["reason"] for i in items] == ["invalid signature"]
    assert items[0]["body_size"] == 8


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/api/admin/payments", {"email": "a\x00b"}),
        ("/api/admin/payments", {"external_id": "a\x00"}),
        ("/api/admin/webhook-logs", {"provider": "\x00"}),
        ("/api/admin/webhook-logs", {"external_id": "\x1b[31m"}),
    ],
)
async def test_control_characters_in_filters_are_422(
    client: httpx.AsyncClient, path: str, params: dict[str, str]
) -> None:
    response = await client.get(path, params=params, headers=ADMIN)
    assert response.status_code == 422, response.text


async def test_dead_jobs_are_listed_and_can_be_retried(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    from cryptocheckout.kit import jobs

    async with sessionmaker() as session:
        await jobs.enqueue(session, "unknown-kind", {}, max_attempts=1)
        await session.commit()
    await _drain(sessionmaker)
    dead = (await client.get("/api/admin/jobs", params={"status": "dead"}, headers=ADMIN)).json()[
        "items"
    ]
    assert [j["kind"] for j in dead] == ["unknown-kind"]
    assert "no handler" in dead[0]["last_error"]
    retried = await client.post(f"/api/admin/jobs/{dead[0]['id']}/retry", headers=ADMIN)
    assert retried.status_code == 200 and retried.json()["status"] == "queued"
    assert (
        await client.post(
            "/api/admin/jobs/00000000-0000-4000-8000-000000000000/retry", headers=ADMIN
        )
    ).status_code == 404


async def test_payment_detail_lists_poll_jobs_of_its_payments(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    """Jobs name their subject: a payment's poll job shows beside the order's fulfilment."""
    from datetime import timedelta

    from cryptocheckout.payments.reconcile import POLL_PAYMENT_JOB, enqueue_stale_polls

    paying = await paying_order(sessionmaker)
    async with sessionmaker() as session:
        assert await enqueue_stale_polls(session, quiet_for=timedelta(0)) == 1
        await session.commit()
    detail = (await client.get(f"/api/admin/payments/{paying.payment_id}", headers=ADMIN)).json()
    assert [(j["kind"], j["status"]) for j in detail["jobs"]] == [(POLL_PAYMENT_JOB, "queued")]


@pytest.mark.parametrize(
    "path", ["/api/admin/payments", "/api/admin/jobs", "/api/admin/webhook-endpoints"]
)
async def test_a_cursor_no_list_gave_is_422_naming_the_query_parameter(
    client: httpx.AsyncClient, path: str
) -> None:
    answer = await client.get(path, params={"cursor": "garbage!"}, headers=ADMIN)
    assert answer.status_code == 422
    assert answer.json()["errors"][0]["loc"] == ["query", "cursor"]

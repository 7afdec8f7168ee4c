"""End to end over real HTTP: the shop and the offline NOWPayments sandbox on loopback.

Order -> payment at the sandbox -> the sandbox's signed notifications -> the shop's worker
-> order paid and fulfilled; and the underpaid, overpaid, expired, failed, late, reordered
and duplicated paths. Both servers run under uvicorn on their own sockets.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cryptocheckout.app import create_app
from cryptocheckout.config import Settings
from cryptocheckout.kit.clock import utcnow
from cryptocheckout.payments.models import Payment, PaymentKind, PaymentStatus
from cryptocheckout.sandbox import SandboxConfig, create_sandbox_app
from cryptocheckout.webhooks.models import WebhookLog
from tests.conftest import ADMIN_TOKEN
from tests.support.ipn import ipn_payload, signed
from tests.support.servers import free_port, serve_in_thread

SECRET = "test-ipn-secret"
Sessions = async_sessionmaker[AsyncSession]


@dataclass
class Checkout:
    shop: httpx.AsyncClient
    sandbox: httpx.AsyncClient
    sessionmaker: Sessions

    async def product(self, price: str = "12.50", keys: int = 3) -> str:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        created = await self.shop.post(
            "/api/admin/products",
            json={
                "sku": f"E2E-{time.monotonic_ns()}",
                "name": "Game",
                "price": price,
                "currency": "USD",
            },
            headers=headers,
        )
        product_id: str = created.json()["id"]
        keys_body = {"keys": [f"K-{product_id}-{i}" for i in range(keys)]}
        await self.shop.post(
            f"/api/admin/products/{product_id}/keys", json=keys_body, headers=headers
        )
        return product_id

    async def order(self, quantity: int = 1) -> dict[str, Any]:
        product_id = await self.product()
        response = await self.shop.post(
            "/api/orders",
            json={
                "email": "buyer@example.com",
                "items": [{"product_id": product_id, "quantity": quantity}],
            },
        )
        assert response.status_code == 201, response.text
        order: dict[str, Any] = response.json()
        return order

    async def pay(self, order: dict[str, Any], pay_currency: str | None = "btc") -> httpx.Response:
        return await self.shop.post(
            "/api/payments",
            json={"order_id": order["id"], "pay_currency": pay_currency},
            headers={"X-Order-Token": order["access_token"]},
        )

    async def view(self, order: dict[str, Any]) -> dict[str, Any]:
        response = await self.shop.get(
            f"/api/orders/{order['id']}", headers={"X-Order-Token": order["access_token"]}
        )
        assert response.status_code == 200
        view: dict[str, Any] = response.json()
        return view

    async def wait_for(
        self, order: dict[str, Any], *statuses: str, timeout: float = 15
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        view = await self.view(order)
        while view["status"] not in statuses:
            if time.monotonic() > deadline:
                raise AssertionError(f"order stayed {view['status']}, wanted {statuses}")
            await asyncio.sleep(0.05)
            view = await self.view(order)
        return view

    async def drive(self, external_id: str, outcome: str, **extra: Any) -> None:
        response = await self.sandbox.post(
            f"/sandbox/payments/{external_id}/drive", json={"outcome": outcome, **extra}
        )
        assert response.status_code == 202, response.text

    async def unanswered(self, order: dict[str, Any], age: timedelta) -> Payment:
        """A BTC payment recorded `age` ago whose NOWPayments answer never came (a crash)."""
        async with self.sessionmaker() as session:
            stuck = Payment(
                order_id=uuid.UUID(order["id"]),
                kind=PaymentKind.PAYMENT,
                status=PaymentStatus.CREATED,
                price_amount=Decimal(order["total"]),
                price_currency="USD",
                pay_currency="btc",
                created_at=utcnow() - age,
            )
            session.add(stuck)
            await session.commit()
            return stuck

    async def lost_create(self, order: dict[str, Any]) -> dict[str, Any]:
        """The create call whose answer the shop lost, as the shop made it: at the sandbox."""
        made = await self.sandbox.post(
            "/v1/payment",
            json={
                "price_amount": order["total"],
                "price_currency": "usd",
                "pay_currency": "btc",
                "order_id": order["id"],
                "ipn_callback_url": f"{self.shop.base_url}/api/webhooks/nowpayments",
            },
            headers={"x-api-key": "test-api-key"},
        )
        assert made.status_code == 201, made.text
        answer: dict[str, Any] = made.json()
        return answer

    async def payment_row(self, payment_id: str) -> Payment:
        async with self.sessionmaker() as session:
            row = (
                await session.execute(select(Payment).where(Payment.id == uuid.UUID(payment_id)))
            ).scalar_one()
            return row


@pytest.fixture
async def checkout(settings: Settings, sessionmaker: Sessions) -> AsyncIterator[Checkout]:
    sandbox_port, shop_port = free_port(), free_port()
    sandbox_url, shop_url = f"http://127.0.0.1:{sandbox_port}", f"http://127.0.0.1:{shop_port}"
    config = SandboxConfig(
        api_key="test-api-key",
        ipn_secret=SECRET,
        public_url=sandbox_url,
        step_delay=0.02,
        resend_attempts=3,
        resend_interval=0.2,
    )
    shop_settings = settings.model_copy(
        update={
            "nowpayments_base": sandbox_url,
            "nowpayments_callback_url": f"{shop_url}/api/webhooks/nowpayments",
            "public_base_url": shop_url,
            "worker_poll_seconds": 0.02,
        }
    )
    with (
        serve_in_thread(create_sandbox_app(config), port=sandbox_port),
        serve_in_thread(create_app(shop_settings, run_worker=True), port=shop_port),
    ):
        async with (
            httpx.AsyncClient(base_url=shop_url, timeout=10) as shop,
            httpx.AsyncClient(base_url=sandbox_url, timeout=10) as sandbox,
        ):
            yield Checkout(shop, sandbox, sessionmaker)


async def test_direct_payment_is_paid_and_fulfilled(checkout: Checkout) -> None:
    order = await checkout.order(quantity=2)
    created = await checkout.pay(order)
    assert created.status_code == 201, created.text
    payment = created.json()
    assert payment["status"] == "waiting"
    assert payment["provider"] == "nowpayments"
    assert payment["price_amount"] == "25.00" and payment["price_currency"] == "USD"
    assert payment["pay_currency"] == "btc" and payment["pay_address"]
    assert payment["external_id"].isdigit()
    again = await checkout.pay(order)
    assert again.status_code == 200 and again.json()["id"] == payment["id"]

    await checkout.drive(payment["external_id"], "finished")
    view = await checkout.wait_for(order, "fulfilled")
    assert view["payment"]["status"] == "finished"
    closed = await checkout.pay(order)
    assert closed.status_code == 409


async def test_invoice_learns_its_payment_from_the_first_notification(checkout: Checkout) -> None:
    order = await checkout.order()
    created = await checkout.pay(order, pay_currency=None)
    assert created.status_code == 201, created.text
    invoice = created.json()
    assert invoice["external_id"] is None and invoice["invoice_id"]
    assert invoice["payment_url"].startswith(str(checkout.sandbox.base_url))
    page = await checkout.sandbox.get(
        invoice["payment_url"].removeprefix(str(checkout.sandbox.base_url))
    )
    assert page.status_code == 200 and "<form" in page.text

    paid = await checkout.sandbox.post(
        f"/sandbox/invoices/{invoice['invoice_id']}/pay",
        json={"pay_currency": "eth", "outcome": "finished"},
    )
    assert paid.status_code == 201, paid.text
    await checkout.wait_for(order, "fulfilled")
    row = await checkout.payment_row(invoice["id"])
    assert row.external_id == str(paid.json()["payment_id"])
    assert row.pay_currency == "eth"


@pytest.mark.parametrize(
    ("outcome", "order_status", "payment_status", "flagged"),
    [
        ("partially_paid", "underpaid", "underpaid", False),
        ("overpaid", "fulfilled", "finished", True),
        ("expired", "expired", "expired", False),
        ("failed", "failed", "failed", False),
        ("late_finished", "fulfilled", "finished", False),
    ],
)
async def test_outcomes(
    checkout: Checkout, outcome: str, order_status: str, payment_status: str, flagged: bool
) -> None:
    order = await checkout.order()
    payment = (await checkout.pay(order)).json()
    await checkout.drive(payment["external_id"], outcome)
    view = await checkout.wait_for(order, order_status)
    await asyncio.sleep(0.3)  # let any further notification arrive: nothing may change
    view = await checkout.view(order)
    assert view["status"] == order_status
    assert view["payment"]["status"] == payment_status
    assert (await checkout.payment_row(payment["id"])).needs_review is flagged


async def test_reordered_and_duplicated_notifications(checkout: Checkout) -> None:
    order = await checkout.order()
    payment = (await checkout.pay(order)).json()
    chaos = await checkout.sandbox.patch(
        f"/sandbox/payments/{payment['external_id']}/chaos", json={"reorder": True, "duplicates": 2}
    )
    assert chaos.status_code == 200, chaos.text
    await checkout.drive(payment["external_id"], "finished")
    await checkout.wait_for(order, "fulfilled")
    await asyncio.sleep(0.5)
    assert (await checkout.view(order))["status"] == "fulfilled"
    async with checkout.sessionmaker() as session:
        logs = (
            (
                await session.execute(
                    select(WebhookLog).where(WebhookLog.external_id == payment["external_id"])
                )
            )
            .scalars()
            .all()
        )
    assert sum(log.deliveries for log in logs) > len(logs)  # redeliveries counted, not stored
    assert {log.provider_status for log in logs} >= {"confirming", "finished"}


async def test_provider_error_is_502_and_a_retry_works(checkout: Checkout) -> None:
    order = await checkout.order()
    refused = await checkout.pay(order, pay_currency="notacoin")
    assert refused.status_code == 502
    problem = refused.json()
    assert refused.headers["content-type"] == "application/problem+json"
    assert problem["provider_code"] == "INVALID_REQUEST_PARAMS"
    async with checkout.sessionmaker() as session:
        failed = (await session.execute(select(Payment))).scalar_one()
    assert failed.status.value == "failed" and failed.error_code == "INVALID_REQUEST_PARAMS"
    retried = await checkout.pay(order)
    assert retried.status_code == 201


async def test_concurrent_payment_requests_open_one_payment(checkout: Checkout) -> None:
    order = await checkout.order()
    responses = await asyncio.gather(*(checkout.pay(order) for _ in range(8)))
    assert {r.status_code for r in responses} <= {200, 201}
    assert len({r.json()["id"] for r in responses}) == 1
    assert [r.status_code for r in responses].count(201) >= 1


async def test_concurrent_notifications_never_5xx(checkout: Checkout) -> None:
    """Also on SQLite, the embedded default: "database is locked" is waited out, not returned."""
    bodies = [
        signed(
            ipn_payload(
                7000000000 + i, "waiting", order_id="elsewhere", price_amount="1", pay_amount="0.1"
            ),
            SECRET,
        )
        for i in range(100)
    ]
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(
        base_url=checkout.shop.base_url, limits=limits, timeout=30
    ) as client:
        responses = await asyncio.gather(
            *(client.post("/api/webhooks/nowpayments", content=b, headers=h) for b, h in bodies)
        )
    assert [r.status_code for r in responses] == [200] * 100


async def test_a_payment_left_created_is_replaced(checkout: Checkout) -> None:
    """A crash between NOWPayments' answer and our commit leaves a `created` payment."""
    from datetime import timedelta

    from cryptocheckout.payments.models import PaymentStatus

    order = await checkout.order()
    stuck = await checkout.unanswered(order, timedelta(minutes=5))
    fresh = await checkout.pay(order)
    assert fresh.status_code == 201, fresh.text
    assert fresh.json()["id"] != str(stuck.id) and fresh.json()["pay_address"]
    row = await checkout.payment_row(str(stuck.id))
    assert row.status is PaymentStatus.FAILED and row.error_code == "OUTCOME_UNKNOWN"


async def test_lost_notifications_are_caught_up_by_polling(
    settings: Settings, sessionmaker: Sessions
) -> None:
    """NOWPayments cannot reach the shop (a wrong callback URL): polling finds the payment paid."""
    from datetime import timedelta

    from cryptocheckout.kit.jobs_models import Job
    from cryptocheckout.nowpayments.client import NowPaymentsClient
    from cryptocheckout.payments.models import StatusChange
    from cryptocheckout.worker import Worker

    sandbox_port, shop_port = free_port(), free_port()
    sandbox_url, shop_url = f"http://127.0.0.1:{sandbox_port}", f"http://127.0.0.1:{shop_port}"
    config = SandboxConfig(
        api_key="test-api-key",
        ipn_secret=SECRET,
        public_url=sandbox_url,
        step_delay=0.01,
        resend_attempts=0,
    )
    unreachable = f"http://127.0.0.1:{free_port()}/api/webhooks/nowpayments"
    shop_settings = settings.model_copy(
        update={
            "nowpayments_base": sandbox_url,
            "nowpayments_callback_url": unreachable,
            "public_base_url": shop_url,
        }
    )
    with (
        serve_in_thread(create_sandbox_app(config), port=sandbox_port),
        serve_in_thread(create_app(shop_settings), port=shop_port),
    ):
        async with (
            httpx.AsyncClient(base_url=shop_url, timeout=10) as shop,
            httpx.AsyncClient(base_url=sandbox_url, timeout=10) as sandbox,
            NowPaymentsClient(sandbox_url, "test-api-key") as client,
        ):
            checkout = Checkout(shop, sandbox, sessionmaker)
            order = await checkout.order()
            payment = (await checkout.pay(order)).json()
            await checkout.drive(payment["external_id"], "finished")
            settled = await sandbox.get(
                f"/sandbox/payments/{payment['external_id']}",
                params={"wait_for_status": "finished"},
            )
            assert settled.status_code == 200
            assert (await checkout.view(order))["status"] == "waiting"  # nothing arrived

            worker = Worker(sessionmaker, client=client, reconcile_after=timedelta(0))
            await worker.scan_for_polls()
            await worker.scan_for_polls()  # one poll per payment per period
            async with sessionmaker() as session:
                polls = (
                    (await session.execute(select(Job).where(Job.kind == "poll_payment")))
                    .scalars()
                    .all()
                )
            assert len(polls) == 1
            while await worker.run_once():
                pass
            view = await checkout.view(order)
    assert view["status"] == "fulfilled"
    assert view["payment"]["status"] == "finished"
    async with sessionmaker() as session:
        causes = (
            (
                await session.execute(
                    select(StatusChange.cause).where(StatusChange.to_status == "paid")
                )
            )
            .scalars()
            .all()
        )
    assert [c.value for c in causes] == ["poll"]


async def test_payment_idempotency_keys(checkout: Checkout) -> None:
    order = await checkout.order()
    headers = {"X-Order-Token": order["access_token"], "Idempotency-Key": "pay-1"}
    body = {"order_id": order["id"], "pay_currency": "btc"}
    first = await checkout.shop.post("/api/payments", json=body, headers=headers)
    again = await checkout.shop.post("/api/payments", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()  # the stored response, not the 200 "open payment" one
    other = await checkout.shop.post(
        "/api/payments", json={**body, "pay_currency": "eth"}, headers=headers
    )
    assert other.status_code == 422


async def test_a_payment_made_before_a_crash_is_confirmed_and_adopted(
    checkout: Checkout,
) -> None:
    """NOWPayments created the payment, the shop died before recording its answer: the
    payment's signed notifications are confirmed with GET /v1/payment/{id} and adopted."""
    from datetime import timedelta

    from cryptocheckout.payments.models import PaymentStatus

    order = await checkout.order()
    stuck = await checkout.unanswered(order, timedelta(minutes=1))
    # The call whose answer was lost, as the shop made it.
    made = await checkout.lost_create(order)
    external_id = str(made["payment_id"])
    await checkout.drive(external_id, "finished")
    await checkout.wait_for(order, "fulfilled")
    row = await checkout.payment_row(str(stuck.id))
    assert row.external_id == external_id and row.status is PaymentStatus.FINISHED
    assert row.pay_address == made["pay_address"]


async def test_a_notification_for_a_payment_nowpayments_does_not_confirm_is_not_adopted(
    checkout: Checkout,
) -> None:
    """A signed notification alone does not adopt: the API must know the payment."""
    from datetime import timedelta

    from cryptocheckout.kit.jobs_models import Job, JobStatus

    order = await checkout.order()
    await checkout.unanswered(order, timedelta(minutes=1))
    body, headers = signed(
        ipn_payload(
            "777000111",
            "finished",
            order_id=order["id"],
            price_amount=order["total"],
            pay_amount="0.0003",
        ),
        SECRET,
    )
    assert (
        await checkout.shop.post("/api/webhooks/nowpayments", content=body, headers=headers)
    ).status_code == 200
    deadline = time.monotonic() + 15
    while True:
        async with checkout.sessionmaker() as session:
            job = (
                await session.execute(select(Job).where(Job.kind == "adopt_payment"))
            ).scalar_one_or_none()
        if job is not None and job.status in (JobStatus.SUCCEEDED, JobStatus.DEAD):
            break
        assert time.monotonic() < deadline, "the adoption job did not run"
        await asyncio.sleep(0.05)
    assert (await checkout.view(order))["status"] == "created"


@pytest.mark.parametrize(("age_seconds", "replaced"), [(5, False), (45, True)])
async def test_a_created_payment_is_replaced_once_its_call_cannot_still_run(
    checkout: Checkout, age_seconds: int, replaced: bool
) -> None:
    """Replaced after the provider call's deadline plus a margin (30 s), not minutes later."""
    from datetime import timedelta

    from cryptocheckout.payments.service import ABANDON_AFTER

    assert timedelta(seconds=30) >= ABANDON_AFTER
    order = await checkout.order()
    stuck = await checkout.unanswered(order, timedelta(seconds=age_seconds))
    answer = await checkout.pay(order)
    if replaced:
        assert answer.status_code == 201 and answer.json()["id"] != str(stuck.id)
    else:
        assert answer.status_code == 200 and answer.json()["id"] == str(stuck.id)


async def test_a_create_past_its_deadline_is_an_unknown_outcome_then_adopted(
    checkout: Checkout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The provider call is bounded: past its deadline the customer hears at once, and the
    payment NOWPayments made meanwhile is adopted by its notifications."""
    from datetime import timedelta

    from cryptocheckout.payments import service

    monkeypatch.setattr(service, "PROVIDER_CALL_DEADLINE", timedelta(seconds=0.3))
    fault = {"path": "/v1/payment", "method": "POST", "delay": 1.5}
    assert (await checkout.sandbox.post("/sandbox/faults", json=fault)).status_code == 201
    order = await checkout.order()
    answer = await checkout.pay(order)
    assert answer.status_code == 502 and answer.json()["provider_code"] == "OUTCOME_UNKNOWN"
    async with checkout.sessionmaker() as session:
        [lost] = (
            (
                await session.execute(
                    select(Payment).where(Payment.order_id == uuid.UUID(order["id"]))
                )
            )
            .scalars()
            .all()
        )
    # NOWPayments did make it (the sandbox drops a request its client left, so the test
    # makes it as the lost call would have).
    made = await checkout.lost_create(order)
    external_id = str(made["payment_id"])
    await checkout.drive(external_id, "finished")
    await checkout.wait_for(order, "fulfilled")
    row = await checkout.payment_row(str(lost.id))
    assert row.external_id == external_id


async def test_a_fulfilled_order_is_delivered_by_link_and_one_email(
    checkout: Checkout, settings: Settings
) -> None:
    """Paid at the sandbox -> fulfilled -> one e-mail with the link; the link shows the keys."""
    from email import message_from_binary_file, policy

    order = await checkout.order(quantity=2)
    payment = (await checkout.pay(order)).json()
    await checkout.drive(payment["external_id"], "finished")
    view = await checkout.wait_for(order, "fulfilled")
    link = view["delivery_url"]
    assert link and link.startswith(f"{checkout.shop.base_url}/delivery/")
    page = await checkout.shop.get(link.removeprefix(str(checkout.shop.base_url)))
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    assert page.text.count("data-licence-key") == 2
    deadline = time.monotonic() + 15
    while not list(settings.mail_dir.glob("*.eml")):
        assert time.monotonic() < deadline, "no mail was written"
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # nothing more may come for this order
    mails = []
    for path in settings.mail_dir.glob("*.eml"):
        with path.open("rb") as handle:
            mails.append(message_from_binary_file(handle, policy=policy.default))
    assert [mail["To"] for mail in mails] == ["buyer@example.com"]
    [mail] = mails
    text = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
    assert "/delivery/" in text
    assert f"K-{order['items'][0]['product_id']}-" not in mail.as_string()  # never the keys

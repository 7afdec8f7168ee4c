"""Staff find and repair payments in the admin console, in a real browser.

The shop (with its worker) runs as a real uvicorn server on loopback, on SQLite; its data is
made as in tests/test_admin_api.py: products and keys through the admin API, orders and
payments put in the database, then signed NOWPayments notifications posted to the IPN
endpoint. Debian's Chromium, driven by Playwright, is the staff member. Every page is checked
with axe-core (no serious or critical violation), must not break its Content-Security-Policy
nor stick out sideways on a phone, and the browser may talk to 127.0.0.1 only. Screenshots at
390 and 1280 px go to SCREENS (default /work/screens/console, else a temporary directory).
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cryptocheckout.admin.models import AdminAction
from cryptocheckout.app import create_app
from cryptocheckout.config import Mode, Settings
from cryptocheckout.kit import jobs
from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.db import create_engine, create_sessionmaker
from cryptocheckout.kit.jobs_models import Job
from cryptocheckout.kit.migrate import upgrade
from cryptocheckout.outbound import service as outbound
from cryptocheckout.outbound.models import WebhookDelivery, WebhookEndpoint
from tests.browser.support import (
    AXE,
    CHROMIUM,
    CHROMIUM_ARGS,
    WAIT_MS,
    csp_complaints,
    loopback_context,
    screens_dir,
)
from tests.support.ipn import ipn_payload, signed
from tests.support.servers import free_port, serve_in_thread
from tests.support.shop import Paying, paying_order

try:
    from playwright.async_api import Browser, Page, async_playwright, expect
except ImportError as exc:  # a loud collection error, never a skip
    raise ImportError("tests/browser needs playwright: .venv/bin/pip install -e '.[dev]'") from exc

pytestmark = pytest.mark.slow

WIDTHS = (1280, 390)
TOKEN = "browser-test-admin-token-of-32-characters"
SECRET = "browser-test-ipn-secret"
Sessions = async_sessionmaker[AsyncSession]


SCREENS = screens_dir("/work/screens/console", "cryptocheckout-console-screens")
AXE_RESULTS = SCREENS / "axe.json"


@dataclass
class Shop:
    url: str
    sessionmaker: Sessions
    underpaid: Paying
    flagged: Paying
    fulfilled: Paying
    waiting_for_keys: Paying
    empty_product_id: str
    failed_log_url: str


async def _notify(shop_url: str, paying: Paying, status: str, paid: str, **extra: Any) -> None:
    payload = ipn_payload(
        paying.external_id or "1",
        status,
        order_id=str(paying.order_id),
        price_amount=extra.pop("price_amount", paying.price),
        pay_amount=paying.pay_amount,
        actually_paid=paid,
        **extra,
    )
    body, headers = signed(payload, SECRET)
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{shop_url}/api/webhooks/nowpayments", content=body, headers=headers
        )
    assert response.status_code == 200, response.text


async def _wait_for(check: Any, what: str) -> None:
    for _ in range(WAIT_MS // 20):
        if await check():
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


async def _order_status(shop_url: str, order_id: uuid.UUID) -> str:
    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"{shop_url}/api/admin/orders/{order_id}",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
    status: str = response.json()["status"]
    return status


@pytest.fixture(scope="module")
async def shop(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Shop]:
    url = f"sqlite:///{tmp_path_factory.mktemp('console')}/console.db"
    await asyncio.to_thread(upgrade, url)
    port = free_port()
    shop_url = f"http://127.0.0.1:{port}"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        mode=Mode.TEST,
        database_url=url,
        admin_token=TOKEN,
        nowpayments_api_key="browser-test-api-key",
        nowpayments_ipn_secret=SECRET,
        nowpayments_base="http://127.0.0.1:9",  # never called: no payment is opened here
        public_base_url=shop_url,
    )
    engine = create_engine(url)
    sessionmaker = create_sessionmaker(engine)
    with serve_in_thread(create_app(settings, run_worker=True), port=port):
        underpaid = await paying_order(sessionmaker, external_id="6100000001")
        flagged = await paying_order(sessionmaker, external_id="6100000002")
        fulfilled = await paying_order(sessionmaker, external_id="6100000003")
        waiting = await paying_order(sessionmaker, external_id="6100000004", keys=0)
        await _notify(shop_url, underpaid, "waiting", "0")
        await _notify(shop_url, underpaid, "partially_paid", "0.0003")
        await _notify(shop_url, flagged, "finished", "0.00045", price_amount="11.00")
        await _notify(shop_url, fulfilled, "confirming", "0.00045")
        await _notify(shop_url, fulfilled, "finished", "0.00045")
        await _notify(shop_url, waiting, "finished", "0.00045")
        # A notification that is not about a payment: stored, then failed for good.
        body, headers = signed({"payout_id": 77, "status": "FINISHED"}, SECRET)
        async with httpx.AsyncClient() as client:
            stored = await client.post(
                f"{shop_url}/api/webhooks/nowpayments", content=body, headers=headers
            )
            assert stored.status_code == 200
            for _ in range(4):  # someone posting with the wrong secret
                await client.post(
                    f"{shop_url}/api/webhooks/nowpayments",
                    content=b'{"payment_id": 1}',
                    headers={"x-nowpayments-sig": "ab" * 64},
                )
            empty = await client.post(
                f"{shop_url}/api/admin/products",
                json={
                    "sku": "DLC-EMPTY",
                    "name": "Expansion pass",
                    "price": "4.99",
                    "currency": "USD",
                },
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert empty.status_code == 201
        async with sessionmaker() as session:
            await jobs.enqueue(session, "send_report", {}, max_attempts=1)
            await session.commit()

        async def settled() -> bool:
            return (
                await _order_status(shop_url, fulfilled.order_id) == "fulfilled"
                and await _order_status(shop_url, underpaid.order_id) == "underpaid"
                and await _order_status(shop_url, waiting.order_id) == "paid"
            )

        await _wait_for(settled, "the notifications to be applied")
        async with httpx.AsyncClient() as client:
            logs = await client.get(
                f"{shop_url}/api/admin/webhook-logs",
                params={"status": "failed"},
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
        failed = logs.json()["items"]
        assert len(failed) == 1, failed
        yield Shop(
            url=shop_url,
            sessionmaker=sessionmaker,
            underpaid=underpaid,
            flagged=flagged,
            fulfilled=fulfilled,
            waiting_for_keys=waiting,
            empty_product_id=empty.json()["id"],
            failed_log_url=f"/admin/webhook-logs/{failed[0]['id']}",
        )
    await engine.dispose()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-browser", pytrace=False)
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: run `npm ci --prefix tests/browser`", pytrace=False)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        yield browser
        await browser.close()


@dataclass
class Staff:
    page: Page
    elsewhere: list[str]
    csp_errors: list[str]


@pytest.fixture
async def staff(browser: Browser) -> AsyncIterator[Staff]:
    context, elsewhere = await loopback_context(browser)
    page = await context.new_page()
    csp_errors = csp_complaints(page)
    yield Staff(page, elsewhere, csp_errors)
    await context.close()
    assert elsewhere == [], f"requests off loopback: {elsewhere}"
    assert csp_errors == [], f"the console broke its own CSP: {csp_errors}"


@pytest.fixture(scope="module", autouse=True)
def _fresh_axe_record() -> Iterator[None]:
    AXE_RESULTS.unlink(missing_ok=True)
    yield


async def check_page(page: Page, name: str) -> None:
    """axe-core finds no serious or critical violation; nothing sticks out on a phone;
    screenshots at both widths."""
    await page.evaluate(AXE.read_text())
    violations: list[dict[str, Any]] = await page.evaluate(
        """async () => {
            const result = await axe.run(document, {resultTypes: ["violations"]});
            return result.violations.map(v => ({id: v.id, impact: v.impact,
                nodes: v.nodes.map(n => n.target.join(" "))}));
        }"""
    )
    record = json.loads(AXE_RESULTS.read_text()) if AXE_RESULTS.exists() else {}
    record[name] = violations
    AXE_RESULTS.write_text(json.dumps(record, indent=1, sort_keys=True))
    bad = [v for v in violations if v["impact"] in ("serious", "critical")]
    assert bad == [], f"{name}: {bad}"
    for width in WIDTHS:
        await page.set_viewport_size({"width": width, "height": 900})
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name} is {overflow}px too wide at {width}px"
        await page.screenshot(path=SCREENS / f"{name}-{width}.png", full_page=True)
    await page.set_viewport_size({"width": 1280, "height": 900})


async def sign_in(page: Page, shop: Shop) -> None:
    await page.goto(f"{shop.url}/admin/login")
    await page.get_by_label("Admin token").fill(TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{shop.url}/admin")


async def actions(shop: Shop) -> list[tuple[str, str, str | None]]:
    async with shop.sessionmaker() as session:
        rows = await session.execute(
            select(AdminAction.action, AdminAction.actor, AdminAction.note).order_by(
                AdminAction.created_at
            )
        )
        return [(a, b, c) for a, b, c in rows.all()]


# -- the tests ------------------------------------------------------------------------------


async def test_sign_in_wrong_then_right_then_sign_out(shop: Shop, staff: Staff) -> None:
    page = staff.page
    await page.goto(f"{shop.url}/admin/payments")
    await page.wait_for_url(f"{shop.url}/admin/login")
    await check_page(page, "login")
    await page.get_by_label("Admin token").fill("not the token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("not right")
    await check_page(page, "login-wrong")
    await page.get_by_label("Admin token").fill(TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(f"{shop.url}/admin")
    await expect(page.get_by_role("heading", name="Needs attention")).to_be_visible()

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(f"{shop.url}/admin/login")
    await page.goto(f"{shop.url}/admin")
    await page.wait_for_url(f"{shop.url}/admin/login")


async def test_every_page_shows_real_data(shop: Shop, staff: Staff) -> None:
    page = staff.page
    await sign_in(page, shop)
    await expect(page.get_by_role("heading", name="Payments held for review")).to_be_visible()
    await expect(page.get_by_text("price conflict: notified 11")).to_be_visible()
    await expect(page.get_by_text("NOWPAYMENTS_IPN_SECRET is most likely")).to_be_visible()
    await expect(
        page.get_by_role("heading", name=re.compile("Paid, waiting for keys"))
    ).to_be_visible()
    await expect(page.get_by_role("heading", name=re.compile("Dead jobs"))).to_be_visible()
    await expect(
        page.get_by_role("heading", name=re.compile("Notifications that failed"))
    ).to_be_visible()
    await check_page(page, "home")

    nav = page.get_by_role("navigation", name="Sections")
    for label in (
        "Payments",
        "Notifications",
        "Rejected",
        "Jobs",
        "Products",
        "Orders",
        "Webhooks",
    ):
        await nav.get_by_role("link", name=label, exact=True).click()
        await expect(page.get_by_role("heading", level=1)).to_contain_text(
            {"Notifications": "Notifications", "Rejected": "Rejected deliveries"}.get(label, label)
        )
        await check_page(page, label.lower())

    await page.goto(f"{shop.url}/admin/payments?status=underpaid")
    await expect(page.get_by_role("link", name="6100000001")).to_be_visible()
    await check_page(page, "payments-filtered")

    await page.goto(f"{shop.url}/admin/payments/{shop.fulfilled.payment_id}")
    await expect(page.locator('[data-order-status="fulfilled"]')).to_be_visible()
    timeline = page.locator("ol.timeline")
    await expect(timeline).to_contain_text("Notification finished")
    await expect(timeline).to_contain_text("Order paid → fulfilled")
    await expect(timeline).to_contain_text("Job fulfil_order")
    await page.locator("ol.timeline details summary").first.click()
    await expect(page.locator("ol.timeline pre.json").first).to_contain_text(
        '"payment_status": "confirming"'
    )
    await check_page(page, "payment-fulfilled")

    await page.goto(f"{shop.url}/admin/payments/{shop.flagged.payment_id}")
    await expect(page.get_by_text("Held for review:")).to_be_visible()
    await check_page(page, "payment-flagged")

    await page.goto(f"{shop.url}/admin/orders/{shop.underpaid.order_id}")
    await expect(page.locator("[data-amount-missing]")).to_have_attribute(
        "data-amount-missing", re.compile(r"^[0-9.]+$")
    )
    await check_page(page, "order-underpaid")

    await page.goto(f"{shop.url}{shop.failed_log_url}")
    await expect(page.get_by_text("not a payment notification")).to_be_visible()
    await check_page(page, "notification-failed")

    await page.goto(f"{shop.url}/admin/products/{shop.empty_product_id}")
    await check_page(page, "product")
    await page.goto(f"{shop.url}/admin/nothing-here")
    await expect(page.get_by_role("heading", name="Not found")).to_be_visible()


async def test_replay_retry_import_keys_and_mark_as_paid(shop: Shop, staff: Staff) -> None:
    page = staff.page
    await sign_in(page, shop)
    label = (await page.locator(".who").inner_text()).strip()
    assert re.fullmatch(r"session [0-9a-f]{8}", label)

    # Replay a notification: it is applied again (changing nothing) and the replay recorded.
    await page.goto(f"{shop.url}{shop.failed_log_url}")
    await page.get_by_label("Note (optional)").fill("after fixing the payout filter")
    await page.get_by_role("button", name="Replay").click()
    await expect(page.get_by_role("heading", name="Staff actions")).to_be_visible()
    await expect(page.get_by_text(f"replay by {label}; reason: after fixing")).to_be_visible()

    # Retry the dead job from the jobs page.
    await page.goto(f"{shop.url}/admin/jobs?status=dead")
    await check_page(page, "jobs-dead")
    await page.locator("tr", has_text="send_report").get_by_role("button", name="Retry").click()
    await page.wait_for_url(re.compile(r"/admin/jobs\?status=dead$"))
    async with shop.sessionmaker() as session:
        job = (await session.execute(select(Job).where(Job.kind == "send_report"))).scalar_one()
        assert job.attempts <= 1  # a fresh set of attempts (it failed again at most once)

    # Import keys for a paid order waiting for them: added and duplicates reported, fulfilled.
    await page.goto(f"{shop.url}/admin/products/{shop.waiting_for_keys.product_id}")
    await page.get_by_label("Keys").fill("WAIT-KEY-1\nWAIT-KEY-2\nWAIT-KEY-1")
    await page.get_by_role("button", name="Import keys").click()
    report = page.get_by_role("status")
    await expect(report).to_have_text("Added 2 key(s); 1 duplicate(s) skipped.")
    await check_page(page, "product-imported")

    async def waiting_fulfilled() -> bool:
        return await _order_status(shop.url, shop.waiting_for_keys.order_id) == "fulfilled"

    await _wait_for(waiting_fulfilled, "the waiting order to get its keys")

    # Mark the underpaid order as paid: the worker fulfils it; the timeline says who and why.
    await page.goto(f"{shop.url}/admin/orders/{shop.underpaid.order_id}")
    await page.get_by_role("button", name="Mark as paid").click()  # no reason: the browser asks
    assert await page.get_by_label("Reason").evaluate("input => !input.validity.valid")
    await page.get_by_label("Reason").fill("Rest paid by bank transfer, ticket 4411")
    await page.get_by_role("button", name="Mark as paid").click()
    await page.wait_for_url(f"{shop.url}/admin/orders/{shop.underpaid.order_id}")

    async def underpaid_fulfilled() -> bool:
        return await _order_status(shop.url, shop.underpaid.order_id) == "fulfilled"

    await _wait_for(underpaid_fulfilled, "the order marked as paid to be fulfilled")
    await page.reload()
    await expect(page.locator('[data-order-status="fulfilled"]')).to_be_visible()
    timeline = page.locator("ol.timeline")
    await expect(timeline).to_contain_text(
        f"cause admin by {label}; note: Rest paid by bank transfer, ticket 4411"
    )
    await expect(timeline).to_contain_text(
        f"by {label}; reason: Rest paid by bank transfer, ticket 4411"
    )
    await expect(timeline).to_contain_text("Order paid → fulfilled")
    await expect(page.get_by_role("button", name="Mark as paid")).to_have_count(0)
    await check_page(page, "order-marked-paid")

    recorded = await actions(shop)
    assert [a for a, _, _ in recorded] == ["replay", "retry_job", "import_keys", "mark_paid"]
    assert {actor for _, actor, _ in recorded} == {label}

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(f"{shop.url}/admin/login")


async def test_webhooks_page_lists_endpoints_and_redelivers(shop: Shop, staff: Staff) -> None:
    """Runs last: it adds endpoints, which later order events would be delivered to."""
    event_id = uuid.uuid4()
    async with shop.sessionmaker() as session:
        erp = WebhookEndpoint(
            url="http://127.0.0.1:9/hooks/orders",
            events=["order.paid", "order.fulfilled"],
            description="ERP order import",
            secret="whsec_YnJvd3Nlci10ZXN0",
            failing_since=utcnow() - timedelta(hours=3),
        )
        old = WebhookEndpoint(
            url="https://old-crm.example/webhooks/cryptocheckout/very/long/path/that/wraps",
            enabled=False,
            disabled_reason="disabled after failing without a success since 2026-11-20T08:00:00",
            secret="whsec_b2xk",
        )
        session.add_all([erp, old])
        await session.flush()
        attempts = [
            WebhookDelivery(
                endpoint_id=erp.id,
                event_id=event_id,
                event_type="order.paid",
                webhook_id=outbound.webhook_id(event_id),
                status_code=code,
                error=error,
                created_at=utcnow() - timedelta(minutes=minutes),
            )
            for code, error, minutes in ((500, "answered 500", 5), (None, "connection refused", 1))
        ]
        session.add_all(attempts)
        session.add(
            WebhookDelivery(
                endpoint_id=old.id,
                event_id=event_id,
                event_type="order.paid",
                webhook_id=outbound.webhook_id(event_id),
                error="timed out after 10 s",
            )
        )
        await jobs.enqueue(
            session,
            outbound.WEBHOOK_DELIVERY_JOB,
            {"event_id": str(event_id), "order_id": str(shop.fulfilled.order_id)},
            subject_id=shop.fulfilled.order_id,
            dedupe_key=outbound.delivery_key(event_id, erp.id),
            max_attempts=1,
        )
        await session.commit()
    page = staff.page
    await sign_in(page, shop)
    await page.goto(f"{shop.url}/admin/webhooks")
    card = page.locator(f'[data-endpoint-id="{erp.id}"]')
    await expect(card).to_contain_text("order.paid, order.fulfilled")
    await expect(card.locator("tbody tr")).to_have_count(2)
    await expect(page.locator(f'[data-endpoint-id="{old.id}"]')).to_contain_text(
        "disabled after failing"
    )
    await check_page(page, "webhooks-endpoints")
    await (
        card.locator(f'[data-delivery-id="{attempts[1].id}"]')
        .get_by_role("button", name="Redeliver")
        .click()
    )
    await page.wait_for_url(f"{shop.url}/admin/webhooks")
    assert [a for a, _, _ in await actions(shop)][-1] == "redeliver_webhook"

    await page.get_by_label("URL").fill("https://93.184.216.34/hooks")
    await page.get_by_label("order.refunded").check()
    await page.get_by_label("Description").fill("Refunds to accounting")
    await page.get_by_role("button", name="Create endpoint").click()
    await expect(page.get_by_role("heading", name="Endpoint created")).to_be_visible()
    await expect(page.locator("[data-endpoint-secret]")).to_contain_text("whsec_")
    await check_page(page, "webhooks-created")
    assert [a for a, _, _ in await actions(shop)][-1] == "create_webhook"

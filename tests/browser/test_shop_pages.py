"""A person buys a key in a real browser: shop -> checkout -> coin -> payment -> keys.

The shop (with its worker) and the offline NOWPayments sandbox run as real uvicorn servers on
loopback; Debian's Chromium, driven by Playwright, is the customer. The sandbox's control API
plays the blockchain. Every page is checked with axe-core (no serious or critical violation),
every page must load without breaking its Content-Security-Policy, and the browser may talk
to 127.0.0.1 only. Screenshots of each page and state, at 390 px and 1280 px wide, go to
SCREENS (default /work/screens/pages, or a temporary directory when that cannot be made).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cryptocheckout.app import create_app
from cryptocheckout.catalogue.models import LicenceKey, Product
from cryptocheckout.catalogue.service import add_keys
from cryptocheckout.config import Settings
from cryptocheckout.payments.models import Payment, PaymentStatus
from cryptocheckout.sandbox import SandboxConfig, create_sandbox_app
from tests.browser.support import (
    AXE,
    CHROMIUM,
    CHROMIUM_ARGS,
    csp_complaints,
    loopback_context,
    screens_dir,
)
from tests.support.servers import free_port, serve_in_thread
from tests.support.shop import TEST_KEY_RING

try:
    from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect
except ImportError as exc:  # a loud collection error, never a skip
    raise ImportError("tests/browser needs playwright: .venv/bin/pip install -e '.[dev]'") from exc

pytestmark = pytest.mark.slow

WIDTHS = (390, 1280)
SECRET = "test-ipn-secret"
Sessions = async_sessionmaker[AsyncSession]


SCREENS = screens_dir("/work/screens/pages", "cryptocheckout-screens")


# -- servers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shop:
    url: str
    sandbox: str
    sessionmaker: Sessions
    dialect: str

    def drive(self, external_id: str, outcome: str) -> None:
        response = httpx.post(
            f"{self.sandbox}/sandbox/payments/{external_id}/drive", json={"outcome": outcome}
        )
        assert response.status_code == 202, response.text

    def set_status(self, external_id: str, status: str) -> None:
        response = httpx.post(
            f"{self.sandbox}/sandbox/payments/{external_id}/status", json={"status": status}
        )
        assert response.status_code == 200, response.text

    async def payments(self, order_id: str) -> list[Payment]:
        async with self.sessionmaker() as session:
            rows = await session.execute(
                select(Payment)
                .where(Payment.order_id == uuid.UUID(order_id))
                .order_by(Payment.created_at)
            )
            return list(rows.scalars())


async def _seed(sessionmaker: Sessions) -> None:
    async with sessionmaker() as session:
        for sku, name, price in (
            ("STARFALL", "Starfall Odyssey", "19.99"),
            ("PIXELFORGE", "PixelForge Pro", "49.00"),
        ):
            product = Product(sku=sku, name=name, price=Decimal(price), currency="USD")
            session.add(product)
            await session.flush()
            await add_keys(session, TEST_KEY_RING, product.id, [f"{sku}-{i}" for i in range(5)])
        await session.commit()


@pytest.fixture
async def shop(settings: Settings, sessionmaker: Sessions, dialect: str) -> AsyncIterator[Shop]:
    await _seed(sessionmaker)
    sandbox_port, shop_port = free_port(), free_port()
    sandbox_url, shop_url = f"http://127.0.0.1:{sandbox_port}", f"http://127.0.0.1:{shop_port}"
    config = SandboxConfig(
        api_key="test-api-key", ipn_secret=SECRET, public_url=sandbox_url, step_delay=0.05
    )
    shop_settings = settings.model_copy(
        update={
            "nowpayments_base": sandbox_url,
            "nowpayments_callback_url": f"{shop_url}/api/webhooks/nowpayments",
            "public_base_url": shop_url,
            "worker_poll_seconds": 0.02,
            "sandbox_pay_pages": True,
            "shop_name": "Keyhaven",
        }
    )
    with (
        serve_in_thread(create_sandbox_app(config), port=sandbox_port),
        serve_in_thread(create_app(shop_settings, run_worker=True), port=shop_port),
    ):
        yield Shop(shop_url, sandbox_url, sessionmaker, dialect)


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
class Customer:
    """One browser context: its page, and what it saw that it should not have."""

    context: BrowserContext
    page: Page
    elsewhere: list[str]
    csp_errors: list[str]


async def new_customer(browser: Browser, *, javascript: bool = True) -> Customer:
    context, elsewhere = await loopback_context(browser, javascript=javascript)
    page = await context.new_page()
    return Customer(context, page, elsewhere, csp_complaints(page))


@pytest.fixture
async def customer(browser: Browser) -> AsyncIterator[Customer]:
    person = await new_customer(browser)
    yield person
    await person.context.close()
    assert person.elsewhere == [], f"requests off loopback: {person.elsewhere}"
    assert person.csp_errors == [], f"the pages broke their own CSP: {person.csp_errors}"


# -- what every page gets -----------------------------------------------------------------

AXE_RESULTS = SCREENS / "axe.json"


async def check_page(page: Page, name: str, shop: Shop) -> None:
    """axe-core finds no serious or critical violation; screenshots at both widths."""
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
    if shop.dialect != "sqlite":  # one set of screenshots is enough
        return
    for width in WIDTHS:
        await page.set_viewport_size({"width": width, "height": 900})
        await page.screenshot(path=SCREENS / f"{name}-{width}.png", full_page=True)
    await page.set_viewport_size({"width": 1280, "height": 900})


def status_of(page: Page) -> Any:
    return page.locator("[data-order-status]")


async def checkout(page: Page, shop: Shop, *, email: str = "buyer@example.com") -> str:
    await page.goto(shop.url + "/")
    await page.get_by_label("Quantity of Starfall Odyssey").fill("1")
    await page.get_by_label("Email").fill(email)
    await page.get_by_role("button", name="Checkout").click()
    await page.wait_for_url(re.compile(r"/orders/[0-9a-f-]{36}$"))
    return page.url.rsplit("/", 1)[1]


async def choose_coin(page: Page, ticker: str) -> str:
    """Click the coin's button; return the sandbox's payment id (from the demo link)."""
    await page.get_by_role("button", name=ticker, exact=True).first.click()
    await expect(page.locator("[data-pay-address]")).to_be_visible()
    link = page.get_by_role("link", name=re.compile("sandbox's page"))
    href = await link.get_attribute("href")
    assert href is not None
    return href.rsplit("/", 1)[1]


# -- the tests ------------------------------------------------------------------------------


async def test_a_whole_purchase_with_a_mistake_live_status_and_keys(
    shop: Shop, customer: Customer
) -> None:
    page = customer.page
    await page.goto(shop.url + "/")
    await expect(page).to_have_title(re.compile("Keyhaven"))
    await expect(page.get_by_label("Quantity of Starfall Odyssey")).to_have_value("0")
    await check_page(page, "shop", shop)

    # A mistake: the message sits beside the field and what was typed stays.
    await page.get_by_label("Quantity of Starfall Odyssey").fill("2")
    await page.get_by_label("Email").fill("not-an-address")
    await page.get_by_role("button", name="Checkout").click()
    email = page.get_by_label("Email")
    await expect(email).to_have_value("not-an-address")
    await expect(email).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#email-error")).to_contain_text("e-mail address")
    await expect(page.get_by_label("Quantity of Starfall Odyssey")).to_have_value("2")
    await check_page(page, "checkout-mistake", shop)

    await email.fill("buyer@example.com")
    await page.get_by_label("Quantity of Starfall Odyssey").fill("1")
    await page.get_by_role("button", name="Checkout").click()
    await page.wait_for_url(re.compile(r"/orders/[0-9a-f-]{36}$"))
    order_id = page.url.rsplit("/", 1)[1]
    await expect(status_of(page)).to_have_attribute("data-order-status", "created")
    await expect(page.get_by_role("button", name="Pay on NOWPayments")).to_be_visible()
    await check_page(page, "order-choose", shop)

    external_id = await choose_coin(page, "BTC")
    amount = await page.locator("[data-pay-amount]").get_attribute("data-pay-amount")
    assert amount is not None and Decimal(amount) > 0
    address = await page.locator("[data-pay-address]").get_attribute("data-pay-address")
    qr = page.get_by_role("img", name=re.compile("QR"))
    await expect(qr).to_be_visible()
    await expect(page.locator("[data-countdown]")).to_contain_text("min")
    [payment] = await shop.payments(order_id)
    assert payment.pay_address == address and payment.external_id == external_id
    assert f"{payment.pay_amount.normalize():f}" == amount
    await check_page(page, "order-paying-btc", shop)

    # From here on nobody reloads: the page must follow by itself.
    await page.evaluate("window.notReloaded = true")
    shop.set_status(external_id, "confirming")
    await expect(status_of(page)).to_have_attribute("data-order-status", "confirming")
    await expect(page.get_by_role("heading", name="Payment seen on the blockchain")).to_be_visible()
    await check_page(page, "order-confirming", shop)

    shop.drive(external_id, "finished")
    await expect(status_of(page)).to_have_attribute("data-order-status", "fulfilled")
    await expect(page.get_by_role("heading", name="Your keys are ready")).to_be_visible()
    assert await page.evaluate("window.notReloaded") is True
    await check_page(page, "order-fulfilled", shop)

    # The keys, on the delivery page: the shop's own layout, stylesheet and copy buttons.
    await page.get_by_role("link", name="Get your keys").click()
    await page.wait_for_url(re.compile(r"/delivery/[^/]+$"))
    await expect(page.get_by_role("heading", name="Your keys")).to_be_visible()
    await expect(page.locator("[data-licence-key]")).to_have_count(1)
    await expect(page.get_by_role("link", name="Download")).to_be_visible()
    await expect(page.get_by_role("link", name="Keyhaven")).to_be_visible()
    assert (
        await page.evaluate(
            "getComputedStyle(document.querySelector('header.site')).borderBottomStyle"
        )
        == "solid"
    )  # pages.css applied under the delivery page's own CSP
    await expect(page.get_by_role("button", name=re.compile("Copy the key"))).to_be_visible()
    await check_page(page, "delivery-keys", shop)


async def test_a_memo_coin_shows_its_tag_and_switching_abandons_the_first_payment(
    shop: Shop, customer: Customer
) -> None:
    page = customer.page
    order_id = await checkout(page, shop)
    first = await choose_coin(page, "ETH")
    await page.get_by_text("Pay with another coin").click()
    await check_page(page, "order-paying-eth-switching", shop)
    await page.get_by_role("button", name="XRP", exact=True).click()
    await expect(page.get_by_role("heading", name=re.compile("XRP"))).to_be_visible()
    tag = page.locator("[data-pay-extra-id]")
    await expect(tag).to_be_visible()
    await expect(page.get_by_role("note")).to_contain_text("required")
    old, new = await shop.payments(order_id)
    assert old.external_id == first and old.status is PaymentStatus.FAILED
    assert new.pay_currency == "xrp" and new.status is PaymentStatus.WAITING
    assert await tag.get_attribute("data-pay-extra-id") == new.payin_extra_id
    # No payment URI for XRP: the QR code holds the address alone.
    await expect(page.get_by_role("img", name=re.compile("QR"))).to_be_visible()
    await check_page(page, "order-paying-xrp-memo", shop)


async def test_underpaid_shows_what_is_missing_and_a_way_to_pay_it(
    shop: Shop, customer: Customer
) -> None:
    page = customer.page
    order_id = await checkout(page, shop)
    external_id = await choose_coin(page, "LTC")
    shop.drive(external_id, "partially_paid")
    await expect(status_of(page)).to_have_attribute("data-order-status", "underpaid")
    missing = page.locator("[data-amount-missing]")
    await expect(missing).to_be_visible()
    value = await missing.get_attribute("data-amount-missing")
    # the amount due exactly as the payment for it asks (the order's credits to 8 decimals)
    assert value is not None and re.fullmatch(r"\d+\.\d{2,8}", value)
    assert Decimal("0") < Decimal(value) < Decimal("19.99")
    await check_page(page, "order-underpaid", shop)

    await page.get_by_role("button", name=f"Pay the remaining {value} USD").click()
    await expect(page.locator("[data-pay-address]")).to_be_visible()
    first, rest = await shop.payments(order_id)
    assert rest.price_amount == Decimal(value)  # a payment for the rest only
    assert first.credit + rest.price_amount == Decimal("19.99")


async def test_expired_offers_try_again_which_opens_a_new_payment(
    shop: Shop, customer: Customer
) -> None:
    page = customer.page
    order_id = await checkout(page, shop)
    external_id = await choose_coin(page, "DOGE")
    shop.drive(external_id, "expired")
    await expect(status_of(page)).to_have_attribute("data-order-status", "expired")
    await expect(page.get_by_role("button", name="Try again")).to_be_visible()
    await check_page(page, "order-expired", shop)

    await page.get_by_role("button", name="Try again").click()
    await expect(page.locator("[data-pay-address]")).to_be_visible()
    first, second = await shop.payments(order_id)
    assert first.status is PaymentStatus.EXPIRED and second.status is PaymentStatus.WAITING
    assert second.pay_currency == "doge"


async def test_a_failed_payment_offers_try_again(shop: Shop, customer: Customer) -> None:
    page = customer.page
    await checkout(page, shop)
    external_id = await choose_coin(page, "TRX")
    shop.drive(external_id, "failed")
    await expect(status_of(page)).to_have_attribute("data-order-status", "failed")
    await expect(page.get_by_role("heading", name="The payment did not go through")).to_be_visible()
    await expect(page.get_by_role("button", name="Try again")).to_be_visible()
    await check_page(page, "order-failed", shop)


async def test_paid_while_keys_are_short_says_the_keys_are_coming(
    shop: Shop, customer: Customer
) -> None:
    page = customer.page
    await checkout(page, shop)
    external_id = await choose_coin(page, "BTC")
    # The last keys went elsewhere meanwhile: fulfilment waits for stock, the order stays paid.
    async with shop.sessionmaker() as session:
        await session.execute(delete(LicenceKey))
        await session.commit()
    shop.drive(external_id, "finished")
    await expect(status_of(page)).to_have_attribute("data-order-status", "paid")
    await expect(page.get_by_role("heading", name="Payment received")).to_be_visible()
    await check_page(page, "order-paid", shop)


async def test_the_hosted_invoice_and_the_way_back(shop: Shop, customer: Customer) -> None:
    page = customer.page
    order_id = await checkout(page, shop)
    await page.get_by_role("button", name="Pay on NOWPayments").click()
    await page.wait_for_url(re.compile(re.escape(shop.sandbox) + r"/payment/\?iid=\d+"))
    # The order page's URL, without its token, is where NOWPayments sends the person back.
    back = page.get_by_role("link", name="Cancel and return to the shop")
    await expect(back).to_have_attribute("href", f"{shop.url}/orders/{order_id}")
    await back.click()
    await page.wait_for_url(f"{shop.url}/orders/{order_id}")
    await expect(page.get_by_role("heading", name="Finish paying on NOWPayments")).to_be_visible()
    await check_page(page, "order-invoice", shop)

    await page.get_by_role("link", name="Continue on NOWPayments").click()
    await page.get_by_label("Bitcoin (BTC)").check()
    await page.get_by_role("button", name="Continue").click()
    await page.get_by_role("button", name="Pay in full").click()
    # NOWPayments' page (the sandbox's, refreshing itself) links back to the order page.
    back = page.get_by_role("link", name="Return to the shop")
    await expect(back).to_have_attribute("href", f"{shop.url}/orders/{order_id}")
    await back.click()
    await page.wait_for_url(f"{shop.url}/orders/{order_id}")
    await expect(status_of(page)).to_have_attribute("data-order-status", "fulfilled")
    await expect(page.get_by_role("heading", name="Your keys are ready")).to_be_visible()


async def test_another_browser_without_the_token_sees_not_found(
    shop: Shop, customer: Customer, browser: Browser
) -> None:
    order_id = await checkout(customer.page, shop)
    stranger = await new_customer(browser)
    try:
        response = await stranger.page.goto(f"{shop.url}/orders/{order_id}")
        assert response is not None and response.status == 404
        await expect(
            stranger.page.get_by_role("heading", name=re.compile("cannot show"))
        ).to_be_visible()
        await check_page(stranger.page, "order-not-found", shop)
        status = await stranger.page.goto(f"{shop.url}/orders/{order_id}/status")
        assert status is not None and status.status == 404
    finally:
        await stranger.context.close()
    assert stranger.elsewhere == [] and stranger.csp_errors == []


async def test_without_javascript_the_purchase_works_with_refreshes(
    shop: Shop, browser: Browser
) -> None:
    person = await new_customer(browser, javascript=False)
    page = person.page
    try:
        await checkout(page, shop)
        await page.get_by_role("button", name="BTC", exact=True).click()
        link = page.get_by_role("link", name=re.compile("sandbox's page"))
        external_id = (await link.get_attribute("href") or "").rsplit("/", 1)[1]
        # Copy buttons need JavaScript: without it they stay hidden.
        await expect(page.get_by_role("button", name="Copy address")).to_be_hidden()
        assert await page.locator('noscript meta[http-equiv="refresh"]').count() == 1
        if shop.dialect == "sqlite":
            for width in WIDTHS:
                await page.set_viewport_size({"width": width, "height": 900})
                await page.screenshot(
                    path=SCREENS / f"order-paying-nojs-{width}.png", full_page=True
                )
        shop.drive(external_id, "finished")
        for _ in range(50):
            await page.get_by_role("link", name="Refresh").click()
            if await status_of(page).get_attribute("data-order-status") == "fulfilled":
                break
            await page.wait_for_timeout(200)
        await expect(status_of(page)).to_have_attribute("data-order-status", "fulfilled")
        await expect(page.get_by_role("link", name="Refresh")).to_have_count(0)
    finally:
        await person.context.close()
    assert person.elsewhere == []


@pytest.fixture(autouse=True, scope="module")
def _fresh_axe_record() -> Iterator[None]:
    AXE_RESULTS.unlink(missing_ok=True)
    yield

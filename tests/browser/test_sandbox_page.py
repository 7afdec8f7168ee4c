"""A person clicks through the sandbox's hosted invoice page in a real browser.

Debian's Chromium (/usr/bin/chromium, installed by ``scripts/install-browser``), driven by
Playwright, opens an invoice's ``invoice_url``, picks a coin, reads the address and amount,
chooses what happens, and waits on the self-refreshing page until the payment has settled.
Meanwhile the shop's IPN URL, a small recording app, must get every status as a notification
signed with the IPN secret.

Both the sandbox and the receiver are real uvicorn servers on loopback. The browser may only
talk to them: any other request it makes is refused and fails the test.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from cryptocheckout.nowpayments.signature import SIGNATURE_HEADER, verify_ipn_signature
from cryptocheckout.sandbox import SandboxConfig, create_sandbox_app
from cryptocheckout.sandbox.coins import quote_pay_amount
from tests.browser.support import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, loopback_context
from tests.support.servers import free_port, serve_in_thread

try:
    from playwright.async_api import Browser, Page, async_playwright, expect
    from playwright.async_api import TimeoutError as PlaywrightTimeoutError
except ImportError as exc:  # a loud collection error, never a skip
    raise ImportError(
        "tests/browser needs the playwright package (dev dependency): "
        ".venv/bin/pip install -e '.[dev]'"
    ) from exc


API_KEY = "browser-test-api-key"
IPN_SECRET = "browser-test-ipn-secret"
STEP_DELAY = 0.02
PRICE = Decimal("12.5")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# -- the shop's side: an IPN receiver ----------------------------------------------------


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict[str, Any]:
        # Decimal keeps amounts exact, to compare them with what the page showed.
        payload: dict[str, Any] = json.loads(self.body, parse_float=Decimal)
        return payload


@dataclass
class Receiver:
    """A tiny ASGI app standing in for the shop: records each POST and answers 200.

    A GET (the browser following "Return to the shop") gets a small HTML page.
    """

    posts: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        if scope["method"] == "POST":
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
            with self.lock:
                self.posts.append(Received(scope["path"], headers, b"".join(chunks)))
            content_type, reply = b"text/plain", b"ok"
        else:
            content_type, reply = b"text/html; charset=utf-8", b"<h1>The shop</h1>"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", content_type)],
            }
        )
        await send({"type": "http.response.body", "body": reply})

    def for_order(self, order_id: str) -> list[Received]:
        with self.lock:
            return [p for p in self.posts if p.json().get("order_id") == order_id]

    async def wait_for_status(self, order_id: str, status: str) -> list[Received]:
        """The order's notifications once the last one has ``status``; fails after WAIT_MS."""
        deadline = time.monotonic() + WAIT_MS / 1000
        while True:
            got = self.for_order(order_id)
            if got and got[-1].json()["payment_status"] == status:
                return got
            if time.monotonic() > deadline:
                seen = [p.json()["payment_status"] for p in got]
                pytest.fail(f"no {status!r} notification for {order_id} in time; got {seen}")
            await asyncio.sleep(0.02)


# -- servers and browser -------------------------------------------------------------------


@dataclass(frozen=True)
class Servers:
    sandbox: str
    receiver: Receiver
    receiver_url: str


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    receiver = Receiver()
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    with serve_in_thread(receiver, lifespan="off") as receiver_url:
        config = SandboxConfig(
            api_key=API_KEY,
            ipn_secret=IPN_SECRET,
            public_url=public_url,
            step_delay=STEP_DELAY,
            resend_interval=0.05,
        )
        with serve_in_thread(create_sandbox_app(config), port=port) as sandbox_url:
            assert sandbox_url == public_url
            yield Servers(sandbox_url, receiver, receiver_url)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's Chromium. "
            "Install it with scripts/install-browser (as root).",
            pytrace=False,
        )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        yield browser
        await browser.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context, elsewhere = await loopback_context(browser, width=1000)
    page = await context.new_page()
    yield page
    await context.close()
    assert elsewhere == [], f"the page asked for something off loopback: {elsewhere}"


def create_invoice(servers: Servers, order_id: str) -> dict[str, Any]:
    response = httpx.post(
        f"{servers.sandbox}/v1/invoice",
        headers={"x-api-key": API_KEY},
        json={
            "price_amount": float(PRICE),
            "price_currency": "usd",
            "order_id": order_id,
            "order_description": "Game key",
            "ipn_callback_url": f"{servers.receiver_url}/ipn",
            "success_url": f"{servers.receiver_url}/paid",
            "cancel_url": f"{servers.receiver_url}/cancelled",
        },
    )
    assert response.status_code == 200, response.text
    invoice: dict[str, Any] = response.json()
    assert invoice["invoice_url"] == f"{servers.sandbox}/payment/?iid={invoice['id']}"
    return invoice


# -- what a person does on the page --------------------------------------------------------


async def pick_coin(page: Page, name: str, ticker: str) -> tuple[str, str]:
    """Choose a coin in the list; return the (amount, address) the quote then shows."""
    await expect(page.get_by_role("heading", name="Choose a coin")).to_be_visible()
    listed = page.locator("tr", has=page.get_by_label(f"{name} ({ticker.upper()})"))
    listed_amount = (await listed.locator("td.mono").inner_text()).strip()
    await page.get_by_label(f"{name} ({ticker.upper()})").check()
    await page.get_by_role("button", name="Continue").click()

    await expect(page.get_by_role("heading", name="Send exactly")).to_be_visible()
    amount_text = (await page.locator("p.amount").inner_text()).strip()
    address = (await page.locator("tr", has_text="Address").locator("td").inner_text()).strip()
    # The exact amount: the price converted at the sandbox's rate, as listed before.
    expected = f"{quote_pay_amount(PRICE, 'usd', ticker).normalize():f}"
    assert amount_text == f"{expected} {ticker.upper()}"
    assert listed_amount == expected
    return expected, address


async def wait_until_settled(page: Page, status: str) -> None:
    """Wait, across the page's own refreshes, for the final page of a settled payment.

    One snapshot must show the status, the end of the card, and no "refreshes itself"
    note: only then has the page stopped refreshing.
    """
    settled = (
        page.locator("main")
        .filter(has=page.locator(f"h2 .status.{status}"))
        .filter(has_text="Start another payment for this invoice")
        .filter(has_not_text="this page refreshes itself")
    )
    try:
        await settled.wait_for(state="attached", timeout=WAIT_MS)
    except PlaywrightTimeoutError:
        shown = await page.locator("main").inner_text()
        pytest.fail(f"the page did not settle as {status!r} in time; it shows:\n{shown}")
    await expect(page.locator('meta[http-equiv="refresh"]')).to_have_count(0)


async def notification_rows(page: Page) -> list[list[str]]:
    rows = page.locator("h3:has-text('Notifications sent to the shop') + table tr:has(td)")
    return [
        [cell.strip() for cell in await row.locator("td").all_inner_texts()]
        for row in await rows.all()
    ]


def check_notifications(
    received: list[Received], invoice: dict[str, Any], statuses: list[str]
) -> list[dict[str, Any]]:
    """Each notification is signed with the IPN secret and belongs to the invoice."""
    payloads = []
    for item in received:
        signature = item.headers.get(SIGNATURE_HEADER)
        assert signature, f"no {SIGNATURE_HEADER} header: {item.headers}"
        assert verify_ipn_signature(item.body, signature, IPN_SECRET), item.body
        assert not verify_ipn_signature(item.body, signature, "some-other-secret")
        assert item.path == "/ipn"
        assert item.headers["content-type"].startswith("application/json")
        payload = item.json()
        assert payload["invoice_id"] == int(invoice["id"])
        assert payload["price_amount"] == PRICE
        assert payload["price_currency"] == "usd"
        payloads.append(payload)
    assert [p["payment_status"] for p in payloads] == statuses
    assert len({p["payment_id"] for p in payloads}) == 1
    return payloads


# -- the tests -----------------------------------------------------------------------------


async def test_paying_in_full_on_the_page_ends_in_a_signed_finished_notification(
    servers: Servers, page: Page, tmp_path: Path
) -> None:
    invoice = create_invoice(servers, "browser-paid")
    await page.goto(invoice["invoice_url"])
    await expect(page).to_have_title(f"Invoice {invoice['id']}")
    await expect(page.get_by_role("heading", name="Pay 12.5 USD")).to_be_visible()

    amount, address = await pick_coin(page, "Bitcoin", "btc")
    assert re.fullmatch(r"bc1q[a-z0-9]{38}", address), address
    assert servers.receiver.for_order("browser-paid") == []  # looking creates nothing

    await page.get_by_role("button", name="Pay in full").click()
    await page.wait_for_url(re.compile(r"[?&]payment_id=\d+"))
    await wait_until_settled(page, "finished")

    received = await servers.receiver.wait_for_status("browser-paid", "finished")
    statuses = ["waiting", "confirming", "confirmed", "sending", "finished"]
    payloads = check_notifications(received, invoice, statuses)
    for payload in payloads:
        assert payload["pay_currency"] == "btc"
        assert payload["pay_address"] == address
        assert payload["pay_amount"] == Decimal(amount)
    assert payloads[-1]["actually_paid"] == Decimal(amount)

    # The final page: what is due, what arrived, where, every step and every delivery.
    card = page.locator(".card", has=page.locator("h2 .status"))
    await expect(card.locator("tr", has_text="Amount due").locator("td")).to_have_text(
        f"{amount} BTC"
    )
    await expect(card.locator("tr", has_text="Received").locator("td")).to_have_text(
        f"{amount} BTC"
    )
    await expect(card.locator("tr", has_text="Address").locator("td")).to_have_text(address)
    await expect(card.locator("ol li .status")).to_have_text(statuses)
    rows = await notification_rows(page)
    assert [row[1:] for row in rows] == [[s, "delivered", "200"] for s in statuses]

    screenshot = tmp_path / "paid.png"
    await page.screenshot(path=screenshot, full_page=True)
    data = screenshot.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000

    # Back to the shop, as the customer would go.
    await page.get_by_role("link", name="Return to the shop").click()
    await page.wait_for_url(f"{servers.receiver_url}/paid")
    await expect(page.get_by_role("heading", name="The shop")).to_be_visible()


async def test_letting_it_expire_ends_in_a_signed_expired_notification(
    servers: Servers, page: Page
) -> None:
    invoice = create_invoice(servers, "browser-expired")
    await page.goto(invoice["invoice_url"])
    amount, address = await pick_coin(page, "Ethereum", "eth")
    assert re.fullmatch(r"0x[0-9a-f]{40}", address), address

    await page.get_by_role("button", name="Let it expire").click()
    await wait_until_settled(page, "expired")
    rows = await notification_rows(page)
    assert [row[1:] for row in rows] == [
        ["waiting", "delivered", "200"],
        ["expired", "delivered", "200"],
    ]

    received = await servers.receiver.wait_for_status("browser-expired", "expired")
    payloads = check_notifications(received, invoice, ["waiting", "expired"])
    assert payloads[-1]["pay_address"] == address
    assert payloads[-1]["pay_amount"] == Decimal(amount)
    assert payloads[-1]["actually_paid"] == 0
    await expect(page.get_by_role("link", name="Return to the shop")).to_have_attribute(
        "href", f"{servers.receiver_url}/cancelled"
    )


# -- the page of a direct payment ---------------------------------------------------------

SCREENS = Path("/work/screens/sandbox")
WIDTHS = {"phone": (390, 844), "desktop": (1280, 900)}


async def screenshots(page: Page, tmp_path: Path, name: str) -> None:
    """The page at a phone's and a desktop's width, kept in tmp_path and in SCREENS.

    At either width nothing may stick out sideways: a phone must not need to scroll across.
    """
    for label, (width, height) in WIDTHS.items():
        await page.set_viewport_size({"width": width, "height": height})
        overflow = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name} is {overflow}px too wide at {width}px"
        shot = tmp_path / f"{name}-{label}-{width}.png"
        await page.screenshot(path=shot, full_page=True)
        data = shot.read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
        if SCREENS.parent.is_dir():  # a copy for people to look at, where there is a place
            SCREENS.mkdir(exist_ok=True)
            (SCREENS / shot.name).write_bytes(data)


def create_direct_payment(servers: Servers, order_id: str, pay_currency: str) -> dict[str, Any]:
    response = httpx.post(
        f"{servers.sandbox}/v1/payment",
        headers={"x-api-key": API_KEY},
        json={
            "price_amount": float(PRICE),
            "price_currency": "usd",
            "pay_currency": pay_currency,
            "order_id": order_id,
            "order_description": "Game key",
            "ipn_callback_url": f"{servers.receiver_url}/ipn",
        },
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = json.loads(response.content, parse_float=Decimal)
    return created


async def test_pay_in_full_on_a_direct_payments_page_sends_signed_notifications(
    servers: Servers, page: Page, tmp_path: Path
) -> None:
    created = create_direct_payment(servers, "browser-direct", "xrp")
    url = f"{servers.sandbox}/sandbox/pay/{created['payment_id']}"
    await page.goto(url)
    await expect(page).to_have_title(f"Payment {created['payment_id']}")
    await expect(page.get_by_role("heading", name="Pay 12.5 USD")).to_be_visible()
    await expect(page.locator("[data-payment-status]")).to_have_text("waiting")
    # What the shop must show its customer: the exact amount, the address and the memo.
    await expect(page.locator("[data-pay-amount]")).to_have_text(f"{created['pay_amount']} XRP")
    await expect(page.locator("[data-pay-address]")).to_have_text(created["pay_address"])
    await expect(page.locator("[data-pay-extra-id]")).to_have_text(created["payin_extra_id"])
    buttons = page.get_by_role("button")
    await expect(buttons).to_have_text(
        ["Pay in full", "Pay less", "Pay more", "Pay late (after expiry)", "Let it expire", "Fail"]
    )
    await expect(page.get_by_label("Amount sent for Pay less (XRP)")).to_have_value("12.5")
    await screenshots(page, tmp_path, "direct-waiting")

    await page.set_viewport_size({"width": 390, "height": 844})
    await page.get_by_role("button", name="Pay in full").click()
    await page.wait_for_url(url)
    settled = page.locator("main").filter(
        has=page.locator('[data-payment-status="finished"]'),
        has_not_text="this page refreshes itself",
    )
    await settled.wait_for(state="attached")
    await expect(page.locator('meta[http-equiv="refresh"]')).to_have_count(0)

    received = await servers.receiver.wait_for_status("browser-direct", "finished")
    statuses = ["waiting", "confirming", "confirmed", "sending", "finished"]
    assert [r.json()["payment_status"] for r in received] == statuses
    for item in received:
        signature = item.headers.get(SIGNATURE_HEADER, "")
        assert verify_ipn_signature(item.body, signature, IPN_SECRET), item.body
        assert not verify_ipn_signature(item.body, signature, "some-other-secret")
        payload = item.json()
        assert str(payload["payment_id"]) == created["payment_id"]
        assert payload["invoice_id"] is None
        assert payload["pay_address"] == created["pay_address"]
        assert payload["payin_extra_id"] == created["payin_extra_id"]
    assert received[-1].json()["actually_paid"] == created["pay_amount"]
    table = page.get_by_role("region", name="Progress").get_by_role("table")
    rows = [
        [cell.strip() for cell in await row.locator("td").all_inner_texts()]
        for row in await table.locator("tbody tr").all()
    ]
    assert [row[1:] for row in rows] == [[s, "delivered", "200"] for s in statuses]
    await expect(page.locator("ol.history li .status")).to_have_text(statuses)
    await screenshots(page, tmp_path, "direct-finished")

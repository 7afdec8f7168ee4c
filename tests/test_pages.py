"""The customer pages over HTTP: storefront, checkout, the order page, its status poll.

The shop runs in-process; NOWPayments is the offline sandbox on a real loopback socket, so
coin lists, payments and invoices are the sandbox's own answers.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cryptocheckout.app import create_app
from cryptocheckout.catalogue.models import Product
from cryptocheckout.catalogue.service import add_keys
from cryptocheckout.config import Settings
from cryptocheckout.orders.models import Order, OrderStatus
from cryptocheckout.payments.models import Payment, PaymentKind, PaymentStatus
from cryptocheckout.sandbox import SandboxConfig, create_sandbox_app
from tests.support.servers import free_port, serve_in_thread
from tests.support.shop import TEST_KEY_RING, paying_order

Sessions = async_sessionmaker[AsyncSession]
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="module")
def sandbox_url() -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = SandboxConfig(api_key="test-api-key", ipn_secret="test-ipn-secret", public_url=url)
    with serve_in_thread(create_sandbox_app(config), port=port):
        yield url


@dataclass
class Pages:
    http: httpx.AsyncClient
    sessionmaker: Sessions
    sandbox: str
    products: dict[str, Product]

    async def form_token(self, path: str = "/") -> str:
        page = await self.http.get(path)
        match = CSRF.search(page.text)
        assert match, page.text
        return match.group(1)

    async def checkout(self, fields: dict[str, str], token: str | None = None) -> httpx.Response:
        token = token if token is not None else await self.form_token()
        return await self.http.post("/checkout", data={"csrf_token": token, **fields})

    def qty(self, sku: str) -> str:
        return f"qty-{self.products[sku].id}"

    async def order(self) -> str:
        response = await self.checkout({"email": "buyer@example.com", self.qty("GAME"): "1"})
        assert response.status_code == 303, response.text
        return response.headers["location"]

    async def pay(self, order_url: str, coin: str) -> httpx.Response:
        token = await self.form_token(order_url)
        return await self.http.post(f"{order_url}/pay", data={"csrf_token": token, "coin": coin})


async def _products(sessionmaker: Sessions) -> dict[str, Product]:
    made = {}
    async with sessionmaker() as session:
        for sku, name, price, keys, active in (
            ("GAME", "Starfall Odyssey", "19.99", 3, True),
            ("SOLDOUT", "Sold Out Game", "5.00", 0, True),
            ("HIDDEN", "Retired Game", "1.00", 3, False),
        ):
            product = Product(
                sku=sku, name=name, price=Decimal(price), currency="USD", active=active
            )
            session.add(product)
            await session.flush()
            await add_keys(session, TEST_KEY_RING, product.id, [f"{sku}-{i}" for i in range(keys)])
            made[sku] = product
        await session.commit()
    return made


def shop_settings(settings: Settings, sandbox_url: str, **extra: object) -> Settings:
    return settings.model_copy(
        update={
            "nowpayments_base": sandbox_url,
            "public_base_url": "http://shop.test",
            "shop_name": "Keyhaven",
            "support_email": "help@keyhaven.test",
            **extra,
        }
    )


@pytest.fixture
async def pages(
    settings: Settings, engine: object, sessionmaker: Sessions, sandbox_url: str
) -> AsyncIterator[Pages]:
    app = create_app(shop_settings(settings, sandbox_url), engine=engine)  # type: ignore[arg-type]
    products = await _products(sessionmaker)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as http:
            yield Pages(http, sessionmaker, sandbox_url, products)


def assert_page_headers(response: httpx.Response) -> None:
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "<script>" not in response.text  # our script is a file, never inline


# -- the storefront -------------------------------------------------------------------------


async def test_the_shop_lists_active_products_with_price_and_stock(pages: Pages) -> None:
    response = await pages.http.get("/")
    assert response.status_code == 200
    assert_page_headers(response)
    html = response.text
    assert "Keyhaven" in html and "help@keyhaven.test" in html
    assert "Starfall Odyssey" in html and "19.99" in html and "USD" in html
    assert "Sold Out Game" in html and "Out of stock" in html
    assert "Retired Game" not in html
    game = pages.products["GAME"].id
    assert f'<label for="qty-{game}">Quantity of Starfall Odyssey</label>' in html
    assert re.search(rf'id="qty-{game}"[^>]*type="number"[^>]*value="0"', html)
    assert '<label for="email">Email</label>' in html
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("cc_csrf=") and "HttpOnly" in cookie and "SameSite=lax" in cookie


async def test_checkout_creates_the_order_and_hands_over_its_access_in_a_cookie(
    pages: Pages, sessionmaker: Sessions
) -> None:
    response = await pages.checkout({"email": "buyer@example.com", pages.qty("GAME"): "2"})
    assert response.status_code == 303
    order_id = uuid.UUID(response.headers["location"].removeprefix("/orders/"))
    cookie = response.headers["set-cookie"]
    async with sessionmaker() as session:
        order = await session.get(Order, order_id)
        assert order is not None and order.total == Decimal("39.98")
        assert f"cc_order_{order_id}={order.access_token}" in cookie
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert f"Path=/orders/{order_id}" in cookie and "Secure" not in cookie
    assert response.headers["cache-control"] == "no-store"


async def test_over_https_the_order_cookie_is_secure(
    settings: Settings, engine: object, sessionmaker: Sessions, sandbox_url: str
) -> None:
    products = await _products(sessionmaker)
    app = create_app(
        shop_settings(settings, sandbox_url, public_base_url="https://shop.test"),
        engine=engine,  # type: ignore[arg-type]
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="https://shop.test") as http:
            pages = Pages(http, sessionmaker, sandbox_url, products)
            response = await pages.checkout({"email": "a@example.com", pages.qty("GAME"): "1"})
    assert response.status_code == 303
    assert "Secure" in response.headers["set-cookie"]


async def test_checkout_without_a_valid_csrf_token_is_refused(
    pages: Pages, sessionmaker: Sessions
) -> None:
    fields = {"email": "buyer@example.com", pages.qty("GAME"): "1"}
    missing = await pages.checkout(fields, token="")
    forged = await pages.checkout(fields, token="1700000000.deadbeef")
    # A token issued for another browser's cookie does not fit this one.
    elsewhere = httpx.AsyncClient(transport=pages.http._transport, base_url="http://shop.test")
    async with elsewhere:
        other_token = CSRF.search((await elsewhere.get("/")).text)
    assert other_token is not None
    await pages.http.get("/")  # this browser's cookie
    borrowed = await pages.checkout(fields, token=other_token.group(1))
    for response in (missing, forged, borrowed):
        assert response.status_code == 403
        assert "form had expired" in response.text
        assert 'value="buyer@example.com"' in response.text
    async with sessionmaker() as session:
        assert (await session.execute(select(Order))).first() is None


@pytest.mark.parametrize(
    ("fields", "where", "message"),
    [
        ({"email": "not-an-address", "GAME": "1"}, "email", "e-mail address"),
        ({"email": "a@example.com", "GAME": "many"}, "GAME", "whole number"),
        ({"email": "a@example.com", "GAME": "-1"}, "GAME", "whole number"),
        ({"email": "a@example.com", "GAME": "\u00b2"}, "GAME", "whole number"),
        ({"email": "a@example.com", "GAME": "9" * 5000}, "GAME", "whole number"),
        ({"email": "a@example.com", "GAME": "0"}, "items", "at least one product"),
        ({"email": "a@example.com", "GAME": "4"}, "GAME", "Only 3 left"),
        ({"email": "a@example.com", "SOLDOUT": "1"}, "SOLDOUT", "Only 0 left"),
    ],
)
async def test_a_mistake_is_shown_beside_its_field_with_the_values_kept(
    pages: Pages, fields: dict[str, str], where: str, message: str
) -> None:
    form = {(pages.qty(k) if k in pages.products else k): v for k, v in fields.items()}
    response = await pages.checkout(form)
    assert response.status_code == 422
    assert_page_headers(response)
    html = response.text
    names = {"email": "email-error", "items": "items-error"}
    error_id = names[where] if where in names else f"{pages.qty(where)}-error"
    match = re.search(rf'id="{error_id}">([^<]+)<', html)
    assert match and message in match.group(1), html
    for name, value in form.items():
        assert re.search(rf'name="{name}"[^>]*value="{re.escape(value)}"', html, re.S), name


# -- the order page -------------------------------------------------------------------------


async def test_without_the_cookie_or_with_a_wrong_token_the_order_is_not_found(
    pages: Pages,
) -> None:
    order_url = await pages.order()
    pages.http.cookies.clear()
    for url in (
        order_url,
        f"{order_url}?token=wrong",
        "/orders/not-a-uuid",
        f"/orders/{uuid.uuid4()}",
    ):
        response = await pages.http.get(url)
        assert response.status_code == 404, url
        assert "text/html" in response.headers["content-type"]
        assert_page_headers(response)
    status = await pages.http.get(f"{order_url}/status")
    assert status.status_code == 404
    pages.http.cookies.set(f"cc_order_{order_url.rsplit('/', 1)[1]}", "wrong", path=order_url)
    assert (await pages.http.get(order_url)).status_code == 404


async def test_a_token_link_sets_the_cookie_and_leaves_the_address_bar(
    pages: Pages, sessionmaker: Sessions
) -> None:
    order_url = await pages.order()
    order_id = uuid.UUID(order_url.rsplit("/", 1)[1])
    async with sessionmaker() as session:
        order = await session.get(Order, order_id)
        assert order is not None
        token = order.access_token
    pages.http.cookies.clear()
    response = await pages.http.get(order_url, params={"token": token})
    assert response.status_code == 303
    assert response.headers["location"] == order_url
    assert response.headers["referrer-policy"] == "no-referrer"
    assert f"cc_order_{order_id}={token}" in response.headers["set-cookie"]
    page = await pages.http.get(order_url)
    assert page.status_code == 200
    assert_page_headers(page)
    assert page.headers["cache-control"] == "no-store"
    assert 'data-order-status="created"' in page.text
    for ticker in ("BTC", "ETH", "XRP"):
        assert f'value="{ticker.lower()}" class="coin">{ticker}</button>' in page.text
    assert ">Pay on NOWPayments</button>" in page.text
    assert token not in page.text


async def test_choosing_a_coin_shows_the_exact_amount_address_and_qr(
    pages: Pages, sessionmaker: Sessions
) -> None:
    order_url = await pages.order()
    response = await pages.pay(order_url, "btc")
    assert response.status_code == 303 and response.headers["location"] == order_url
    async with sessionmaker() as session:
        payment = (await session.execute(select(Payment))).scalar_one()
    page = (await pages.http.get(order_url)).text
    assert f'data-pay-amount="{payment.pay_amount.normalize():f}"' in page
    assert f'data-pay-address="{payment.pay_address}"' in page
    assert re.search(r'<svg role="img" aria-label="QR code[^"]*"', page)
    assert "data-pay-extra-id" not in page
    assert "data-countdown" in page
    assert "/sandbox/pay/" not in page  # only the demo links to the sandbox's pages
    assert 'http-equiv="refresh"' in page  # without script, the page refreshes itself


async def test_an_unknown_coin_or_a_missing_token_changes_nothing(
    pages: Pages, sessionmaker: Sessions
) -> None:
    order_url = await pages.order()
    unknown = await pages.pay(order_url, "notacoin")
    assert unknown.status_code == 422 and "Choose one of the coins" in unknown.text
    forged = await pages.http.post(f"{order_url}/pay", data={"coin": "btc"})
    assert forged.status_code == 403
    async with sessionmaker() as session:
        assert (await session.execute(select(Payment))).first() is None


async def test_the_hosted_invoice_returns_to_the_order_page_without_the_token(
    pages: Pages,
) -> None:
    order_url = await pages.order()
    response = await pages.pay(order_url, "nowpayments")
    assert response.status_code == 303
    invoice_url = response.headers["location"]
    assert invoice_url.startswith(f"{pages.sandbox}/payment/?iid=")
    iid = invoice_url.rsplit("=", 1)[1]
    invoice = httpx.get(f"{pages.sandbox}/sandbox/invoices/{iid}").json()
    assert invoice["success_url"] == f"http://shop.test{order_url}"
    assert invoice["cancel_url"] == f"http://shop.test{order_url}"
    page = (await pages.http.get(order_url)).text
    assert "Finish paying on NOWPayments" in page and invoice_url.replace("&", "&amp;") in page


async def test_switching_coins_abandons_the_untouched_payment(
    pages: Pages, sessionmaker: Sessions
) -> None:
    order_url = await pages.order()
    await pages.pay(order_url, "btc")
    await pages.pay(order_url, "xrp")
    async with sessionmaker() as session:
        old, new = (await session.execute(select(Payment).order_by(Payment.created_at))).scalars()
    assert old.pay_currency == "btc" and old.status is PaymentStatus.FAILED
    assert new.pay_currency == "xrp" and new.status is PaymentStatus.WAITING
    page = (await pages.http.get(order_url)).text
    assert f'data-pay-extra-id="{new.payin_extra_id}"' in page
    assert "destination tag is required" in page


async def test_the_status_poll_is_authorised_by_the_cookie_and_follows_the_order(
    pages: Pages,
) -> None:
    order_url = await pages.order()
    first = await pages.http.get(f"{order_url}/status")
    assert first.status_code == 200
    assert first.headers["cache-control"] == "no-store"
    assert first.json()["status"] == "created" and first.json()["final"] is False
    await pages.pay(order_url, "eth")
    second = (await pages.http.get(f"{order_url}/status")).json()
    assert second["status"] == "waiting" and second["key"] != first.json()["key"]
    page = (await pages.http.get(order_url)).text
    assert f'data-state-key="{second["key"]}"' in page


# -- states set in the database -------------------------------------------------------------


async def _page_for(pages: Pages, order_id: uuid.UUID) -> str:
    url = f"/orders/{order_id}"
    assert (await pages.http.get(url, params={"token": "token"})).status_code == 303
    response = await pages.http.get(url)
    assert response.status_code == 200
    return response.text


async def test_underpaid_shows_what_arrived_and_what_is_missing(
    pages: Pages, sessionmaker: Sessions
) -> None:
    paying = await paying_order(sessionmaker, price="12.50", pay_amount="0.00045")
    async with sessionmaker() as session:
        await session.execute(
            update(Payment)
            .where(Payment.id == paying.payment_id)
            .values(
                status=PaymentStatus.UNDERPAID,
                actually_paid=Decimal("0.000225"),
                credit=Decimal("6.25"),
            )
        )
        await session.execute(
            update(Order).where(Order.id == paying.order_id).values(status=OrderStatus.UNDERPAID)
        )
        await session.commit()
    page = await _page_for(pages, paying.order_id)
    assert 'data-order-status="underpaid"' in page
    assert 'data-amount-missing="6.25"' in page
    assert re.search(r"0\.000225 BTC\s+\(6\.25 USD\)", page)
    assert ">Pay the remaining 6.25 USD</button>" in page


@pytest.mark.parametrize("status", [OrderStatus.EXPIRED, OrderStatus.FAILED])
async def test_expired_or_failed_offers_try_again(
    pages: Pages, sessionmaker: Sessions, status: OrderStatus
) -> None:
    paying = await paying_order(sessionmaker)
    async with sessionmaker() as session:
        await session.execute(
            update(Payment)
            .where(Payment.id == paying.payment_id)
            .values(status=PaymentStatus(status.value))
        )
        await session.execute(
            update(Order).where(Order.id == paying.order_id).values(status=status)
        )
        await session.commit()
    page = await _page_for(pages, paying.order_id)
    assert f'data-order-status="{status.value}"' in page
    assert 'value="btc" class="button primary">Try again</button>' in page
    assert 'http-equiv="refresh"' not in page


async def test_confirming_paid_and_fulfilled_say_so(pages: Pages, sessionmaker: Sessions) -> None:
    paying = await paying_order(sessionmaker, kind=PaymentKind.PAYMENT)
    for payment_status, order_status, words in (
        (PaymentStatus.CONFIRMING, OrderStatus.CONFIRMING, "Payment seen on the blockchain"),
        (PaymentStatus.FINISHED, OrderStatus.PAID, "Payment received"),
        (PaymentStatus.FINISHED, OrderStatus.FULFILLED, "Your keys are ready"),
    ):
        async with sessionmaker() as session:
            await session.execute(
                update(Payment).where(Payment.id == paying.payment_id).values(status=payment_status)
            )
            await session.execute(
                update(Order).where(Order.id == paying.order_id).values(status=order_status)
            )
            await session.commit()
        page = await _page_for(pages, paying.order_id)
        assert f'data-order-status="{order_status.value}"' in page and words in page
        assert ">BTC</button>" not in page  # nothing left to pay
    status = (await pages.http.get(f"/orders/{paying.order_id}/status")).json()
    assert status == {**status, "status": "fulfilled", "final": True}


async def test_static_files_are_served_with_nosniff(pages: Pages) -> None:
    for path, kind in (("/static/pages.css", "text/css"), ("/static/pages.js", "javascript")):
        response = await pages.http.get(path)
        assert response.status_code == 200 and kind in response.headers["content-type"]
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_concurrent_polls_share_their_queries(pages: Pages, engine: AsyncEngine) -> None:
    urls = [await pages.order() for _ in range(3)]
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "FROM orders" in statement:
            statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        answers = await asyncio.gather(
            *(pages.http.get(f"{url}/status") for url in urls for _ in range(10))
        )
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert [a.status_code for a in answers] == [200] * 30
    assert {a.json()["status"] for a in answers} == {"created"}
    assert 1 <= len(statements) < 30

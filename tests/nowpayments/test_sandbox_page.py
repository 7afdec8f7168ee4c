"""The hosted invoice page, driven the way a browser does: GET the page, POST the form."""

from __future__ import annotations

import re
from decimal import Decimal

import httpx
import pytest

from cryptocheckout.nowpayments.models import loads_exact
from cryptocheckout.nowpayments.signature import verify_ipn_signature
from tests.nowpayments.conftest import IpnReceiver, SandboxHandle

SHOP = "https://shop.example"


def page_path(invoice: dict[str, str], **params: str) -> str:
    """The path part of invoice_url (plus ``params``), to request on the sandbox's base URL."""
    path = "/" + invoice["invoice_url"].split("/", 3)[3]
    return path + "".join(f"&{key}={value}" for key, value in params.items())


def browser(sandbox: SandboxHandle) -> httpx.Client:
    return httpx.Client(base_url=sandbox.base_url, follow_redirects=True)


def choose(
    sandbox: SandboxHandle, invoice: dict[str, str], outcome: str, **fields: str
) -> httpx.Response:
    form = {"iid": invoice["id"], "outcome": outcome, **fields}
    with httpx.Client(base_url=sandbox.base_url) as client:
        return client.post("/payment/", data=form)


def invoice_for(sandbox: SandboxHandle, receiver: IpnReceiver, **fields: object) -> dict[str, str]:
    return sandbox.create_invoice(
        price_amount=20,
        ipn_callback_url=receiver.url,
        order_id="order-page",
        order_description="Game key <b>deluxe</b>",
        success_url=f"{SHOP}/paid",
        cancel_url=f"{SHOP}/cancelled",
        partially_paid_url=f"{SHOP}/partial",
        **fields,
    )


def test_the_page_offers_every_coin_until_one_is_picked(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    invoice = invoice_for(sandbox, ipn_receiver)
    with browser(sandbox) as client:
        page = client.get(page_path(invoice))
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'name="pay_currency" value="btc"' in page.text
    assert 'name="pay_currency" value="xrp"' in page.text
    assert "Pay 20 USD" in page.text
    # Nothing is created by looking.
    assert sandbox.notifications() == []
    assert sandbox._ok(sandbox.control.get("/sandbox/payments"))["items"] == []


def test_the_quote_shows_address_memo_and_exact_amount_that_the_payment_gets(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    invoice = invoice_for(sandbox, ipn_receiver)
    with browser(sandbox) as client:
        quote = client.get(page_path(invoice, pay_currency="xrp", new="1")).text
    # 20 USD / 0.5 = 40 XRP
    assert "40 XRP" in quote
    address = re.search(r'<td class="mono">(r\w{33})</td>', quote)
    memo = re.search(r"Memo / tag</th><td class=\"mono\">(\d+)</td>", quote)
    assert address and memo
    response = choose(sandbox, invoice, "finished", pay_currency="xrp")
    assert response.status_code == 303
    payment_id = re.search(r"payment_id=(\d+)", response.headers["location"])
    assert payment_id
    status = sandbox.api.get(f"/v1/payment/{payment_id.group(1)}").json()
    assert status["pay_address"] == address.group(1)
    assert status["payin_extra_id"] == memo.group(1)
    assert status["pay_amount"] == 40


def test_paying_in_full_walks_the_sequence_and_links_back_to_the_shop(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    invoice = invoice_for(sandbox, ipn_receiver)
    with browser(sandbox) as client:
        page = client.post(
            "/payment/", data={"iid": invoice["id"], "pay_currency": "ltc", "outcome": "finished"}
        )
        assert page.status_code == 200
        deliveries = ipn_receiver.wait_for(5)
        assert [d.status for d in deliveries] == [
            "waiting",
            "confirming",
            "confirmed",
            "sending",
            "finished",
        ]
        for delivery in deliveries:
            assert verify_ipn_signature(delivery.body, delivery.signature, sandbox.ipn_secret)
            body = loads_exact(delivery.body)
            assert body["invoice_id"] == int(invoice["id"])
            assert body["order_id"] == "order-page"
            assert body["pay_currency"] == "ltc"
        assert loads_exact(deliveries[-1].body)["actually_paid"] == Decimal("0.25")
        sandbox.notifications(invoice_id=invoice["id"], min_count=5, settled=True)
        done = client.get(str(page.url)).text
    assert 'class="status finished"' in done
    assert f'href="{SHOP}/paid"' in done
    assert "http-equiv" not in done  # nothing left to wait for, so no auto-refresh


@pytest.mark.parametrize(
    ("outcome", "final", "link"),
    [
        ("partially_paid", "partially_paid", "partial"),
        ("overpaid", "finished", "paid"),
        ("late_finished", "finished", "paid"),
        ("expired", "expired", "cancelled"),
        ("failed", "failed", "cancelled"),
    ],
)
def test_each_choice_ends_in_its_status(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver, outcome: str, final: str, link: str
) -> None:
    invoice = invoice_for(sandbox, ipn_receiver, pay_currency="eth")
    response = choose(sandbox, invoice, outcome)
    assert response.status_code == 303
    payment_id = response.headers["location"].rsplit("=", 1)[1]
    view = sandbox.payment(payment_id, wait_for_status=final)
    sandbox.notifications(payment_id, settled=True, min_count=len(view["history"]))
    if outcome == "late_finished":
        assert [h["status"] for h in view["history"]][:3] == ["waiting", "expired", "confirming"]
    with browser(sandbox) as client:
        page = client.get(response.headers["location"]).text
    assert f'class="status {final}"' in page
    assert f'href="{SHOP}/{link}"' in page


def test_a_chosen_amount_is_what_arrives(sandbox: SandboxHandle, ipn_receiver: IpnReceiver) -> None:
    invoice = invoice_for(sandbox, ipn_receiver, pay_currency="trx")
    response = choose(sandbox, invoice, "partially_paid", actually_paid="99.5")
    payment_id = response.headers["location"].rsplit("=", 1)[1]
    sandbox.payment(payment_id, wait_for_status="partially_paid")
    last = ipn_receiver.wait_for(2)[-1]
    assert loads_exact(last.body)["actually_paid"] == Decimal("99.5")


def test_a_fixed_coin_invoice_shows_the_quote_directly(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    invoice = invoice_for(sandbox, ipn_receiver, pay_currency="doge")
    with browser(sandbox) as client:
        page = client.get(page_path(invoice)).text
    assert 'name="pay_currency"' in page and 'value="doge"' in page
    assert "Choose a coin" not in page
    assert re.search(r"D\w{33}", page)


def test_the_page_escapes_what_the_shop_sent(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    invoice = sandbox.create_invoice(
        order_id='"><script>alert(1)</script>',
        order_description="<img src=x onerror=alert(1)>",
        ipn_callback_url=ipn_receiver.url,
    )
    with browser(sandbox) as client:
        page = client.get(page_path(invoice)).text
    assert "<script" not in page and "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_the_page_loads_nothing_from_elsewhere(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    invoice = invoice_for(sandbox, ipn_receiver)
    with browser(sandbox) as client:
        pages = [
            client.get(page_path(invoice)).text,
            client.get(page_path(invoice, pay_currency="btc")).text,
            client.get("/").text,
        ]
    for page in pages:
        assert "<script" not in page
        assert " src=" not in page
        assert "@import" not in page and "<link" not in page


def test_the_index_lists_invoices_and_payments(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    invoice = invoice_for(sandbox, ipn_receiver)
    payment = sandbox.create_payment()
    with browser(sandbox) as client:
        index = client.get("/").text
    assert invoice["id"] in index and payment["payment_id"] in index


@pytest.mark.parametrize(
    ("form", "status"),
    [
        ({"iid": "123", "pay_currency": "btc", "outcome": "finished"}, 404),
        ({"iid": "abc", "pay_currency": "btc", "outcome": "finished"}, 404),
        ({"iid": "", "pay_currency": "btc", "outcome": "finished"}, 404),
        ({"pay_currency": "nope", "outcome": "finished"}, 400),
        ({"pay_currency": "btc", "outcome": "explode"}, 400),
        ({"pay_currency": "btc"}, 400),
        ({"pay_currency": "btc", "outcome": "finished", "actually_paid": "lots"}, 400),
        ({"pay_currency": "btc", "outcome": "finished", "actually_paid": "-1"}, 400),
    ],
)
def test_bad_choices_get_an_html_error_never_a_500(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver, form: dict[str, str], status: int
) -> None:
    invoice = invoice_for(sandbox, ipn_receiver)
    body = {"iid": invoice["id"], **form}
    with httpx.Client(base_url=sandbox.base_url) as client:
        response = client.post("/payment/", data=body)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("text/html")


def test_a_coin_whose_minimum_the_price_misses_is_refused(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    invoice = sandbox.create_invoice(price_amount=2, ipn_callback_url=ipn_receiver.url)
    with browser(sandbox) as client:
        picker = client.get(page_path(invoice)).text
        quote = client.get(page_path(invoice, pay_currency="btc")).text
    assert re.search(r'value="btc"\s+disabled', picker)
    assert "below the BTC minimum" in quote
    response = choose(sandbox, invoice, "finished", pay_currency="btc")
    assert response.status_code == 400
    assert "amountTo is too small" in response.text


def test_unknown_invoice_pages_are_404(sandbox: SandboxHandle) -> None:
    with browser(sandbox) as client:
        assert client.get("/payment/", params={"iid": "4000000000"}).status_code == 404
        assert client.get("/payment/").status_code == 404
        assert client.get("/no/such/page").status_code == 404


def test_another_payment_can_be_started_for_the_same_invoice(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    invoice = invoice_for(sandbox, ipn_receiver)
    first = choose(sandbox, invoice, "expired", pay_currency="eth")
    second = choose(sandbox, invoice, "finished", pay_currency="btc")
    assert first.headers["location"] != second.headers["location"]
    view = sandbox._ok(sandbox.control.get(f"/sandbox/invoices/{invoice['id']}"))
    assert len(view["payment_ids"]) == 2


@pytest.mark.parametrize(
    ("outcome", "typed"),
    [
        ("finished", "0.0001"),  # Enter in the amount field presses "Pay in full"
        ("late_finished", "1"),
        ("partially_paid", "100000"),
        ("partially_paid", "0"),
        ("overpaid", "0.00000001"),
        ("expired", "1"),
        ("failed", "1"),
    ],
)
def test_a_typed_amount_must_agree_with_the_choice(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver, outcome: str, typed: str
) -> None:
    invoice = invoice_for(sandbox, ipn_receiver, pay_currency="trx")
    response = choose(sandbox, invoice, outcome, actually_paid=typed)
    assert response.status_code == 400
    assert "amount" in response.text
    assert (
        sandbox.control.get("/sandbox/payments", params={"invoice_id": invoice["id"]}).json()[
            "items"
        ]
        == []
    )

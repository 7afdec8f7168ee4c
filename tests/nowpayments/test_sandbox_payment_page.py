"""The page of a direct payment (``/sandbox/pay/{payment_id}``), over real HTTP as a browser
without JavaScript uses it: GET the page, POST a button's form, follow the 303 back.
"""

from __future__ import annotations

import re
from decimal import ROUND_DOWN, Decimal
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest

from cryptocheckout.nowpayments.models import loads_exact
from cryptocheckout.nowpayments.signature import verify_ipn_signature
from tests.nowpayments.conftest import IpnReceiver, SandboxHandle

BUTTONS = [
    "Pay in full",
    "Pay less",
    "Pay more",
    "Pay late (after expiry)",
    "Let it expire",
    "Fail",
]


class Page(HTMLParser):
    """What a test needs from the HTML: tags with attributes, button and label texts."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.buttons: list[str] = []
        self.labels: dict[str, str] = {}  # for= -> text
        self._open: tuple[str, str] | None = None  # ("button" | "label", for)
        self._text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        self.tags.append((tag, attributes))
        if tag in ("button", "label"):
            self._open, self._text = (tag, attributes.get("for", "")), []

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if self._open is not None and tag == self._open[0]:
            text = " ".join("".join(self._text).split())
            if tag == "button":
                self.buttons.append(text)
            else:
                self.labels[self._open[1]] = text
            self._open = None

    def attr(self, name: str) -> str:
        """The value of the one ``data-*`` (or other) attribute ``name`` on the page."""
        values = [attrs[name] for _, attrs in self.tags if name in attrs]
        assert len(values) == 1, f"{name}: {values}"
        return values[0]


def page_client(sandbox: SandboxHandle) -> httpx.Client:
    return httpx.Client(base_url=sandbox.base_url)


def direct_payment(
    sandbox: SandboxHandle, receiver: IpnReceiver, pay_currency: str = "btc"
) -> dict[str, Any]:
    """A payment as the shop creates one; amounts read as exact Decimals."""
    response = sandbox.api.post(
        "/v1/payment",
        json={
            "price_amount": 20,
            "price_currency": "usd",
            "pay_currency": pay_currency,
            "order_id": "order-direct",
            "ipn_callback_url": receiver.url,
        },
    )
    assert response.status_code == 201, response.text
    receiver.wait_for(1)  # the `waiting` notification every new payment sends
    created: dict[str, Any] = loads_exact(response.content)
    return created


def press(sandbox: SandboxHandle, payment_id: str, outcome: str, **fields: str) -> httpx.Response:
    with page_client(sandbox) as client:
        return client.post(f"/sandbox/pay/{payment_id}", data={"outcome": outcome, **fields})


def test_the_page_shows_what_to_send_the_status_and_every_button(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    created = direct_payment(sandbox, ipn_receiver, pay_currency="xrp")
    with page_client(sandbox) as client:
        response = client.get(f"/sandbox/pay/{created['payment_id']}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = Page(response.text)
    assert page.attr("data-payment-status") == "waiting"
    # 20 USD at 0.5 USD per XRP, with the address and memo the API gave the shop.
    assert Decimal(page.attr("data-pay-amount")) == created["pay_amount"] == 40
    assert page.attr("data-pay-address") == created["pay_address"]
    assert page.attr("data-pay-extra-id") == created["payin_extra_id"]
    assert "40 XRP" in response.text and "Ripple (XRP)" in response.text
    assert page.buttons == BUTTONS
    # Every field has a visible label naming its button; no script, nothing from elsewhere.
    inputs = [attrs for tag, attrs in page.tags if tag == "input"]
    assert [page.labels[i["id"]] for i in inputs] == [
        "Amount sent for Pay less (XRP)",
        "Amount sent for Pay more (XRP)",
    ]
    assert [i["value"] for i in inputs] == ["20", "44"]
    assert not [tag for tag, _ in page.tags if tag == "script"]
    assert not re.search(r'(src|href)="(https?:)?//', response.text)
    viewport = [a for t, a in page.tags if t == "meta" and a.get("name") == "viewport"]
    assert viewport and "width=device-width" in viewport[0]["content"]
    assert {"header", "main", "h1", "h2"} <= {tag for tag, _ in page.tags}


def test_a_coin_without_memo_shows_none(sandbox: SandboxHandle, ipn_receiver: IpnReceiver) -> None:
    created = direct_payment(sandbox, ipn_receiver, pay_currency="btc")
    with page_client(sandbox) as client:
        html = client.get(f"/sandbox/pay/{created['payment_id']}").text
    assert "data-pay-extra-id" not in html and "Memo / tag" not in html
    assert Page(html).attr("data-pay-address") == created["pay_address"]


@pytest.mark.parametrize(
    ("outcome", "first", "statuses", "share"),
    [
        ("finished", "confirming", ["confirming", "confirmed", "sending", "finished"], "1"),
        ("partially_paid", "partially_paid", ["partially_paid"], "0.5"),
        ("overpaid", "confirming", ["confirming", "confirmed", "sending", "finished"], "1.1"),
        (
            "late_finished",
            "expired",
            ["expired", "confirming", "confirmed", "sending", "finished"],
            "1",
        ),
        ("expired", "expired", ["expired"], "0"),
        ("failed", "failed", ["failed"], "0"),
    ],
)
def test_each_button_walks_the_payment_and_signs_its_notifications(
    sandbox: SandboxHandle,
    ipn_receiver: IpnReceiver,
    outcome: str,
    first: str,
    statuses: list[str],
    share: str,
) -> None:
    created = direct_payment(sandbox, ipn_receiver)
    payment_id = created["payment_id"]
    response = press(sandbox, payment_id, outcome)
    assert response.status_code == 303
    assert response.headers["location"] == f"/sandbox/pay/{payment_id}"
    # The first step has happened by the time the browser comes back.
    with page_client(sandbox) as client:
        back = Page(client.get(response.headers["location"]).text)
    seen = back.attr("data-payment-status")
    assert seen in statuses[statuses.index(first) :], seen

    deliveries = ipn_receiver.wait_for(1 + len(statuses))
    assert [d.status for d in deliveries] == ["waiting", *statuses]
    pay_amount = created["pay_amount"]
    for delivery in deliveries:
        assert delivery.signature is not None
        assert verify_ipn_signature(delivery.body, delivery.signature, sandbox.ipn_secret)
        assert not verify_ipn_signature(delivery.body, delivery.signature, "another-secret")
        body = loads_exact(delivery.body)
        assert str(body["payment_id"]) == payment_id
        assert body["order_id"] == "order-direct"
    expected_paid = (pay_amount * Decimal(share)).quantize(Decimal("1E-8"), ROUND_DOWN)
    assert loads_exact(deliveries[-1].body)["actually_paid"] == expected_paid

    sandbox.notifications(payment_id, settled=True, min_count=len(deliveries))
    with page_client(sandbox) as client:
        done = client.get(f"/sandbox/pay/{payment_id}").text
    assert Page(done).attr("data-payment-status") == statuses[-1]
    assert Page(done).attr("data-actually-paid") == f"{expected_paid.normalize():f}"
    assert "http-equiv" not in done  # settled: the page stops refreshing itself


def test_pay_less_sends_the_amount_typed(sandbox: SandboxHandle, ipn_receiver: IpnReceiver) -> None:
    created = direct_payment(sandbox, ipn_receiver)
    # A customer whose exchange kept a small fee.
    short = created["pay_amount"] - Decimal("0.00000462")
    response = press(sandbox, created["payment_id"], "partially_paid", actually_paid=f"{short}")
    assert response.status_code == 303
    deliveries = ipn_receiver.wait_for(2)
    assert loads_exact(deliveries[-1].body)["actually_paid"] == short
    assert deliveries[-1].status == "partially_paid"


@pytest.mark.parametrize(
    ("outcome", "typed"),
    [("partially_paid", "due"), ("partially_paid", "abc"), ("overpaid", "half")],
)
def test_an_amount_that_contradicts_the_button_changes_nothing(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver, outcome: str, typed: str
) -> None:
    created = direct_payment(sandbox, ipn_receiver)
    due = created["pay_amount"]
    text = {"due": f"{due}", "half": f"{due / 2}"}.get(typed, typed)
    response = press(sandbox, created["payment_id"], outcome, actually_paid=text)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "Check the amount" in response.text
    assert f'href="/sandbox/pay/{created["payment_id"]}"' in response.text
    assert sandbox.payment(created["payment_id"])["payment_status"] == "waiting"
    assert len(sandbox.notifications(created["payment_id"])) == 1


def test_an_unknown_button_or_payment_is_refused_as_a_page(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    created = direct_payment(sandbox, ipn_receiver)
    refund = press(sandbox, created["payment_id"], "refunded")
    assert refund.status_code == 400 and "Choose what happens" in refund.text
    assert sandbox.payment(created["payment_id"])["payment_status"] == "waiting"
    with page_client(sandbox) as client:
        for response in (
            client.get("/sandbox/pay/123"),
            client.get("/sandbox/pay/not-a-number"),
            client.post("/sandbox/pay/123", data={"outcome": "finished"}),
        ):
            assert response.status_code == 404
            assert response.headers["content-type"].startswith("text/html")
            assert "Payment not found" in response.text


def test_a_form_posted_from_another_site_is_refused(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    created = direct_payment(sandbox, ipn_receiver)
    with page_client(sandbox) as client:
        elsewhere = client.post(
            f"/sandbox/pay/{created['payment_id']}",
            data={"outcome": "finished"},
            headers={"origin": "https://evil.example"},
        )
        here = client.post(
            f"/sandbox/pay/{created['payment_id']}",
            data={"outcome": "failed"},
            headers={"origin": sandbox.base_url},
        )
    assert elsewhere.status_code == 403
    assert here.status_code == 303
    assert sandbox.payment(created["payment_id"])["history"][-1]["status"] == "failed"
    statuses = [n["payment_status"] for n in sandbox.notifications(created["payment_id"])]
    assert statuses == ["waiting", "failed"]


def test_the_index_links_a_direct_payment_to_its_page(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    created = direct_payment(sandbox, ipn_receiver)
    with page_client(sandbox) as client:
        index = client.get("/").text
    assert f'href="/sandbox/pay/{created["payment_id"]}"' in index

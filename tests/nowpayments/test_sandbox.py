"""The sandbox's /v1 API: key checks, answer shapes, NOWPayments' type quirks and errors."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryptocheckout.nowpayments.models import CreatedPayment, Invoice, PaymentInfo, loads_exact
from tests.nowpayments.conftest import IpnReceiver, SandboxHandle

ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

MERCHANT_CALLS = [
    ("GET", "/v1/currencies", None),
    ("GET", "/v1/merchant/coins", None),
    ("GET", "/v1/min-amount?currency_from=btc&currency_to=btc", None),
    ("GET", "/v1/estimate?amount=10&currency_from=usd&currency_to=btc", None),
    ("POST", "/v1/invoice", {"price_amount": 10, "price_currency": "usd"}),
    ("POST", "/v1/payment", {"price_amount": 10, "price_currency": "usd", "pay_currency": "eth"}),
    ("POST", "/v1/invoice-payment", {"iid": "1", "pay_currency": "btc"}),
    ("GET", "/v1/payment/5000000000", None),
    ("GET", "/v1/payment/", None),
]


def exact(response: httpx.Response) -> Any:
    """The body with every number as a Decimal, to check amounts to the last digit."""
    return loads_exact(response.content)


def error(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert body["status"] is False
    assert body["statusCode"] == response.status_code
    assert isinstance(body["message"], str) and body["message"]
    return response.status_code, body["code"]


def test_status_needs_no_key_and_every_answer_has_a_request_id(sandbox: SandboxHandle) -> None:
    response = sandbox.control.get("/v1/status")
    assert response.status_code == 200
    assert response.json() == {"message": "OK"}
    assert response.headers["x-request-id"]
    assert sandbox.control.get("/v1/currencies").headers["x-request-id"]
    assert sandbox.control.get("/sandbox/settings").headers["x-request-id"]


@pytest.mark.parametrize(("method", "path", "body"), MERCHANT_CALLS)
@pytest.mark.parametrize("key", [None, "", "wrong-key"])
def test_merchant_calls_refuse_a_missing_or_wrong_key(
    sandbox: SandboxHandle, method: str, path: str, body: Any, key: str | None
) -> None:
    headers = {} if key is None else {"x-api-key": key}
    response = sandbox.control.request(method, path, json=body, headers=headers)
    assert response.status_code == 403
    assert response.json() == {
        "status": False,
        "statusCode": 403,
        "code": "INVALID_API_KEY",
        "message": "Invalid api key",
    }


def test_currencies_in_both_shapes(sandbox: SandboxHandle) -> None:
    plain = sandbox.api.get("/v1/currencies").json()["currencies"]
    assert {"btc", "eth", "ltc", "usdttrc20", "xrp", "trx", "doge"} <= set(plain)
    assert all(isinstance(c, str) for c in plain)
    fixed = exact(sandbox.api.get("/v1/currencies", params={"fixed_rate": "true"}))["currencies"]
    btc = next(item for item in fixed if item["currency"] == "btc")
    assert btc["min_amount"] == Decimal("0.0001") and btc["max_amount"] > btc["min_amount"]
    assert sandbox.api.get("/v1/currencies", params={"fixed_rate": "maybe"}).status_code == 400


def test_merchant_coins(sandbox: SandboxHandle) -> None:
    body = sandbox.api.get("/v1/merchant/coins").json()
    assert "btc" in body["currencies"]
    assert "BTC" in body["selectedCurrencies"]


def test_min_amount_and_estimate_use_fixed_decimal_rates(sandbox: SandboxHandle) -> None:
    minimum = exact(
        sandbox.api.get(
            "/v1/min-amount",
            params={"currency_from": "btc", "currency_to": "btc", "fiat_equivalent": "usd"},
        )
    )
    assert minimum == {
        "currency_from": "btc",
        "currency_to": "btc",
        "min_amount": Decimal("0.0001"),
        "fiat_equivalent": Decimal("6.5"),
    }
    estimate = exact(
        sandbox.api.get(
            "/v1/estimate", params={"amount": "100", "currency_from": "usd", "currency_to": "btc"}
        )
    )
    assert estimate == {
        "currency_from": "usd",
        "amount_from": 100,
        "currency_to": "btc",
        "estimated_amount": Decimal("0.00153846"),
    }


def test_create_payment_answers_201_with_payment_id_as_a_string(sandbox: SandboxHandle) -> None:
    response = sandbox.api.post(
        "/v1/payment",
        json={
            "price_amount": 20,
            "price_currency": "usd",
            "pay_currency": "btc",
            "order_id": "order-1",
            "order_description": "Licence key",
            "ipn_callback_url": "https://shop.example/ipn",
        },
    )
    assert response.status_code == 201
    body = exact(response)
    assert isinstance(body["payment_id"], str) and re.fullmatch(r"\d{10}", body["payment_id"])
    assert isinstance(body["purchase_id"], str) and re.fullmatch(r"\d{10}", body["purchase_id"])
    assert body["payment_status"] == "waiting"
    assert body["price_amount"] == 20 and body["price_currency"] == "usd"
    # 20 / 65000 = 0.000307692..., rounded up to 8 decimals so the price is covered.
    assert body["pay_amount"] == Decimal("0.0003077")
    assert body["pay_address"].startswith("bc1q") and body["payin_extra_id"] is None
    assert body["order_id"] == "order-1" and body["network"] == "btc"
    assert ISO_MS.fullmatch(body["created_at"]) and ISO_MS.fullmatch(body["updated_at"])
    assert ISO_MS.fullmatch(body["expiration_estimate_date"])
    CreatedPayment.parse_json_bytes(response.content)


def test_payment_status_gives_payment_id_as_a_number(sandbox: SandboxHandle) -> None:
    created = sandbox.create_payment(price_amount="12.50", price_currency="eur", pay_currency="eth")
    response = sandbox.api.get(f"/v1/payment/{created['payment_id']}")
    assert response.status_code == 200
    body = exact(response)
    assert body["payment_id"] == int(created["payment_id"])
    assert body["invoice_id"] is None and body["parent_payment_id"] is None
    assert body["purchase_id"] == created["purchase_id"]
    assert body["price_amount"] == Decimal("12.5") and body["price_currency"] == "eur"
    # 12.50 EUR * 1.08 / 3200 = 0.00421875
    assert body["pay_amount"] == Decimal("0.00421875")
    assert body["actually_paid"] == 0
    assert ISO_MS.fullmatch(body["updated_at"])
    assert set(body["fee"]) == {"currency", "depositFee", "serviceFee", "withdrawalFee"}
    info = PaymentInfo.parse_json_bytes(response.content)
    assert info.payment_id == created["payment_id"]


def test_invoice_gives_id_and_price_as_strings_and_a_hosted_page(sandbox: SandboxHandle) -> None:
    response = sandbox.api.post(
        "/v1/invoice",
        json={
            "price_amount": 12.5,
            "price_currency": "usd",
            "order_id": "order-7",
            "ipn_callback_url": "https://shop.example/ipn",
            "success_url": "https://shop.example/ok",
            "cancel_url": "https://shop.example/cancel",
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert isinstance(body["id"], str) and re.fullmatch(r"\d{10}", body["id"])
    assert body["price_amount"] == "12.5"
    assert body["pay_currency"] is None
    assert body["invoice_url"] == f"{sandbox.base_url}/payment/?iid={body['id']}"
    assert body["success_url"] == "https://shop.example/ok"
    Invoice.parse_json_bytes(response.content)


def test_invoice_payment_links_the_payment_to_the_invoice_as_a_number(
    sandbox: SandboxHandle,
) -> None:
    invoice = sandbox.create_invoice(order_id="order-9", order_description="Two keys")
    response = sandbox.api.post(
        "/v1/invoice-payment", json={"iid": invoice["id"], "pay_currency": "ltc"}
    )
    assert response.status_code == 201
    created = response.json()
    assert isinstance(created["payment_id"], str)
    status = sandbox.api.get(f"/v1/payment/{created['payment_id']}").json()
    assert status["invoice_id"] == int(invoice["id"])
    assert status["order_id"] == "order-9" and status["order_description"] == "Two keys"
    assert status["pay_currency"] == "ltc"
    # iid may come as a number too.
    again = sandbox.api.post(
        "/v1/invoice-payment", json={"iid": int(invoice["id"]), "pay_currency": "btc"}
    )
    assert again.status_code == 201


def test_memo_coins_get_a_payin_extra_id(sandbox: SandboxHandle) -> None:
    xrp = sandbox.create_payment(pay_currency="xrp")
    assert xrp["pay_address"].startswith("r")
    assert xrp["payin_extra_id"] and xrp["payin_extra_id"].isdigit()
    assert sandbox.create_payment(pay_currency="xlm")["payin_extra_id"]
    assert sandbox.create_payment(pay_currency="doge")["payin_extra_id"] is None


def test_addresses_are_deterministic_per_payment(sandbox: SandboxHandle) -> None:
    first = sandbox.create_payment(pay_currency="eth")
    second = sandbox.create_payment(pay_currency="eth")
    assert first["pay_address"] != second["pay_address"]
    assert re.fullmatch(r"0x[0-9a-f]{40}", first["pay_address"])
    status = sandbox.api.get(f"/v1/payment/{first['payment_id']}").json()
    assert status["pay_address"] == first["pay_address"]


def test_pay_amount_and_payout_currency_are_honoured(sandbox: SandboxHandle) -> None:
    created = sandbox.create_payment(pay_amount="0.5", pay_currency="eth", payout_currency="btc")
    status = exact(sandbox.api.get(f"/v1/payment/{created['payment_id']}"))
    assert status["pay_amount"] == Decimal("0.5")
    assert status["outcome_currency"] == "btc"


def test_every_payment_has_a_purchase_id_in_its_answers_and_notifications(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    first = sandbox.create_payment(ipn_callback_url=ipn_receiver.url)
    second = sandbox.create_payment(ipn_callback_url=ipn_receiver.url)
    purchases = {first["purchase_id"], second["purchase_id"]}
    assert len(purchases) == 2 and all(re.fullmatch(r"\d+", p) for p in purchases)
    for created in (first, second):
        status = exact(sandbox.api.get(f"/v1/payment/{created['payment_id']}"))
        assert status["purchase_id"] == created["purchase_id"]
        ipn = loads_exact(sandbox.notifications(created["payment_id"], min_count=1)[0]["body"])
        assert ipn["purchase_id"] == created["purchase_id"]


def test_purchase_id_adds_a_payment_to_a_purchase(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    first = sandbox.create_payment(price_amount=25, case="partially_paid")
    sandbox.payment(first["payment_id"], wait_for_status="partially_paid")
    # The rest of the purchase, named as a string or, as some clients send it, a number.
    second = sandbox.create_payment(
        price_amount=12.5, purchase_id=first["purchase_id"], ipn_callback_url=ipn_receiver.url
    )
    third = sandbox.create_payment(price_amount=12.5, purchase_id=int(first["purchase_id"]))
    assert second["purchase_id"] == third["purchase_id"] == first["purchase_id"]
    assert len({first["payment_id"], second["payment_id"], third["payment_id"]}) == 3
    status = exact(sandbox.api.get(f"/v1/payment/{second['payment_id']}"))
    assert status["purchase_id"] == first["purchase_id"]
    sandbox.drive(second["payment_id"], "finished")
    sandbox.notifications(second["payment_id"], settled=True, min_count=5)
    bodies = [loads_exact(d.body) for d in ipn_receiver.deliveries]
    assert [b["payment_status"] for b in bodies][-1] == "finished"
    assert {b["purchase_id"] for b in bodies} == {first["purchase_id"]}
    assert {str(b["payment_id"]) for b in bodies} == {second["payment_id"]}


@pytest.mark.parametrize("purchase_id", ["1", 1, "abc", "", "12.5"])
def test_an_unknown_purchase_id_is_invalid_request_params(
    sandbox: SandboxHandle, purchase_id: object
) -> None:
    sandbox.create_payment()  # a purchase exists, just not this one
    unknown = sandbox.api.post(
        "/v1/payment",
        json={
            "price_amount": 25,
            "price_currency": "usd",
            "pay_currency": "btc",
            "purchase_id": purchase_id,
        },
    )
    assert error(unknown) == (400, "INVALID_REQUEST_PARAMS")
    assert set(unknown.json()) == {"status", "statusCode", "code", "message"}
    assert len(sandbox._ok(sandbox.control.get("/sandbox/payments"))["items"]) == 1


def test_amounts_as_strings_reproduces_the_production_variant(sandbox: SandboxHandle) -> None:
    sandbox.settings(amounts_as_strings=True)
    created = sandbox.create_payment(price_amount=20)
    assert created["pay_amount"] == "0.0003077"
    status = sandbox.api.get(f"/v1/payment/{created['payment_id']}").json()
    assert status["pay_amount"] == "0.0003077" and status["price_amount"] == "20"
    assert isinstance(status["payment_id"], int)


def test_below_the_minimum_is_amount_minimal_error(sandbox: SandboxHandle) -> None:
    response = sandbox.api.post(
        "/v1/payment", json={"price_amount": 1, "price_currency": "usd", "pay_currency": "btc"}
    )
    assert error(response) == (400, "AMOUNT_MINIMAL_ERROR")
    invoice = sandbox.api.post(
        "/v1/invoice", json={"price_amount": 1, "price_currency": "usd", "pay_currency": "btc"}
    )
    assert error(invoice) == (400, "AMOUNT_MINIMAL_ERROR")


def test_unknown_payment_is_404_and_a_malformed_id_is_400(sandbox: SandboxHandle) -> None:
    assert error(sandbox.api.get("/v1/payment/5999999999")) == (404, "NOT_FOUND")
    assert error(sandbox.api.get("/v1/payment/abc")) == (400, "INVALID_REQUEST_PARAMS")
    assert error(sandbox.api.get("/v1/nothing-here")) == (404, "NOT_FOUND")
    missing_invoice = sandbox.api.post(
        "/v1/invoice-payment", json={"iid": "4000000001", "pay_currency": "btc"}
    )
    assert error(missing_invoice) == (404, "NOT_FOUND")


GOOD_PAYMENT = {"price_amount": 25, "price_currency": "usd", "pay_currency": "btc"}
BAD_PAYMENT_BODIES: list[Any] = [
    {},
    {**GOOD_PAYMENT, "price_amount": None},
    {**GOOD_PAYMENT, "price_amount": -5},
    {**GOOD_PAYMENT, "price_amount": 0},
    {**GOOD_PAYMENT, "price_amount": "abc"},
    {**GOOD_PAYMENT, "price_amount": "NaN"},
    {**GOOD_PAYMENT, "price_amount": "Infinity"},
    {**GOOD_PAYMENT, "price_amount": 1e30},
    {**GOOD_PAYMENT, "price_amount": True},
    {**GOOD_PAYMENT, "price_amount": [25]},
    {**GOOD_PAYMENT, "price_amount": {"value": 25}},
    {**GOOD_PAYMENT, "price_currency": "zzz"},
    {**GOOD_PAYMENT, "price_currency": 5},
    {**GOOD_PAYMENT, "pay_currency": None},
    {**GOOD_PAYMENT, "pay_currency": "usd"},
    {**GOOD_PAYMENT, "pay_currency": "nosuchcoin"},
    {**GOOD_PAYMENT, "ipn_callback_url": "not a url"},
    {**GOOD_PAYMENT, "ipn_callback_url": "javascript:alert(1)"},
    {**GOOD_PAYMENT, "order_id": ["x"]},
    {**GOOD_PAYMENT, "order_id": "x" * 5000},
    {**GOOD_PAYMENT, "case": "explode"},
    {**GOOD_PAYMENT, "is_fixed_rate": "sometimes"},
    {**GOOD_PAYMENT, "pay_amount": -1},
    [GOOD_PAYMENT],
    "just a string",
    None,
]


@pytest.mark.parametrize("body", BAD_PAYMENT_BODIES)
def test_bad_payment_bodies_are_invalid_request_params(sandbox: SandboxHandle, body: Any) -> None:
    response = sandbox.api.post(
        "/v1/payment", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert error(response) == (400, "INVALID_REQUEST_PARAMS")


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (
            "price_amount=25&price_currency=usd&pay_currency=btc",
            "application/x-www-form-urlencoded",
        ),
        (json.dumps(GOOD_PAYMENT), "text/plain"),
        ('{"price_amount": 25,', "application/json"),
        ('{"price_amount": NaN}', "application/json"),
        (b"\xff\xfe{}", "application/json"),
        ("[" * 5000 + "]" * 5000, "application/json"),
    ],
)
def test_bodies_that_are_not_a_json_object_are_invalid_request_params(
    sandbox: SandboxHandle, content: str | bytes, content_type: str
) -> None:
    response = sandbox.api.post(
        "/v1/payment", content=content, headers={"content-type": content_type}
    )
    assert error(response) == (400, "INVALID_REQUEST_PARAMS")


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/min-amount", {}),
        ("/v1/min-amount", {"currency_from": "usd"}),
        ("/v1/min-amount", {"currency_from": "btc", "currency_to": "nope"}),
        ("/v1/estimate", {"currency_from": "usd", "currency_to": "btc"}),
        ("/v1/estimate", {"amount": "-3", "currency_from": "usd", "currency_to": "btc"}),
        ("/v1/estimate", {"amount": "1e999", "currency_from": "usd", "currency_to": "btc"}),
        ("/v1/estimate", {"amount": "10", "currency_from": "usd", "currency_to": "???"}),
    ],
)
def test_bad_query_parameters_are_invalid_request_params(
    sandbox: SandboxHandle, path: str, params: dict[str, str]
) -> None:
    assert error(sandbox.api.get(path, params=params)) == (400, "INVALID_REQUEST_PARAMS")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
payment_fields = st.sampled_from(
    [
        "price_amount",
        "price_currency",
        "pay_currency",
        "pay_amount",
        "order_id",
        "ipn_callback_url",
        "purchase_id",
        "case",
        "payout_currency",
        "is_fixed_rate",
    ]
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(["/v1/payment", "/v1/invoice", "/v1/invoice-payment", "/v1/auth"]),
    body=st.dictionaries(payment_fields | st.text(max_size=8), json_values, max_size=6),
)
def test_no_json_body_ever_causes_a_server_error(
    sandbox: SandboxHandle, path: str, body: dict[str, Any]
) -> None:
    response = sandbox.api.post(path, json={**GOOD_PAYMENT, **body})
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error(response)


def test_a_form_encoded_body_is_refused_with_a_clear_message(sandbox: SandboxHandle) -> None:
    response = sandbox.api.post("/v1/payment", data={"price_amount": "25"})
    assert error(response) == (400, "INVALID_REQUEST_PARAMS")
    assert "JSON" in response.json()["message"]


def test_a_defect_still_answers_in_the_error_shape_with_a_request_id(
    sandbox: SandboxHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("simulated defect")

    monkeypatch.setattr("cryptocheckout.sandbox.coins.estimate", broken)
    response = sandbox.api.get(
        "/v1/estimate", params={"amount": "1", "currency_from": "usd", "currency_to": "btc"}
    )
    assert error(response) == (500, "INTERNAL_ERROR")
    assert response.headers["x-request-id"]

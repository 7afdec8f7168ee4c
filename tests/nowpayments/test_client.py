"""The async NOWPayments client against the offline sandbox, over real HTTP on loopback.

Faults (429, 5xx, CDN pages, slow answers that make real timeouts) come from the
sandbox's control API (``POST /sandbox/faults``). Request mocking is used only
for transport faults the sandbox cannot produce (a connection refused on the
first attempt but not the next, a connection dropped after the request was
sent); those tests say so in their docstrings.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cryptocheckout.nowpayments.client import (
    DEFAULT_TIMEOUT,
    NowPaymentsClient,
    _retry_after,
    encode_json,
)
from cryptocheckout.nowpayments.errors import (
    AmountMinimalError,
    AuthRequiredError,
    InvalidApiKeyError,
    InvalidRequestParamsError,
    MissingCredentialsError,
    NotFoundError,
    NowPaymentsApiError,
    NowPaymentsError,
    NowPaymentsUnavailable,
    api_error_from_response,
)
from cryptocheckout.nowpayments.models import (
    CreatedPayment,
    FixedRateCurrency,
    PaymentInfo,
    ProviderPaymentStatus,
    loads_exact,
)
from tests.nowpayments.conftest import (
    MERCHANT_EMAIL,
    MERCHANT_PASSWORD,
    IpnReceiver,
    SandboxHandle,
)
from tests.support.servers import free_port

Factory = Callable[..., SandboxHandle]


def make_client(sandbox: SandboxHandle, **overrides: Any) -> NowPaymentsClient:
    """A client with credentials and retry delays small enough for tests."""
    options: dict[str, Any] = {
        "email": MERCHANT_EMAIL,
        "password": MERCHANT_PASSWORD,
        "backoff_base": 0.001,
        "max_backoff": 0.005,
        "max_retry_after": 0.05,
    }
    options.update(overrides)
    base_url = options.pop("base_url", sandbox.base_url)
    api_key = options.pop("api_key", sandbox.api_key)
    return NowPaymentsClient(base_url, api_key, **options)


@pytest.fixture
async def np(sandbox: SandboxHandle) -> AsyncIterator[NowPaymentsClient]:
    async with make_client(sandbox) as client:
        yield client


def requests_to(sandbox: SandboxHandle, path: str | None = None) -> list[dict[str, Any]]:
    """The sandbox's log of /v1 calls (method, path, status, key validity, bearer, body)."""
    params = {"path": path} if path else {}
    response = sandbox.control.get("/sandbox/requests", params=params)
    response.raise_for_status()
    return list(response.json()["items"])


def payments_of_order(sandbox: SandboxHandle, order_id: str) -> list[dict[str, Any]]:
    response = sandbox.control.get("/sandbox/payments", params={"order_id": order_id})
    response.raise_for_status()
    return list(response.json()["items"])


# ---------------------------------------------------------------- public and reference calls


async def test_status_needs_no_key(np: NowPaymentsClient, sandbox: SandboxHandle) -> None:
    assert await np.status() == "OK"
    [record] = requests_to(sandbox, "/v1/status")
    assert record["api_key"] == "missing"


async def test_currencies_as_tickers(np: NowPaymentsClient, sandbox: SandboxHandle) -> None:
    tickers = await np.currencies()
    assert {"btc", "eth", "xrp", "usdttrc20"} <= set(tickers)
    assert all(isinstance(t, str) and t == t.lower() for t in tickers)
    [record] = requests_to(sandbox, "/v1/currencies")
    assert record["api_key"] == "valid"
    assert record["query"] == ""


async def test_currencies_with_fixed_rate_limits(
    np: NowPaymentsClient, sandbox: SandboxHandle
) -> None:
    items = await np.currencies(fixed_rate=True)
    assert all(isinstance(item, FixedRateCurrency) for item in items)
    btc = next(item for item in items if item.currency == "btc")
    assert btc.min_amount == Decimal("0.0001")
    assert btc.max_amount is not None and btc.max_amount > btc.min_amount
    assert requests_to(sandbox, "/v1/currencies")[0]["query"] == "fixed_rate=true"


async def test_merchant_coins_read_either_list_in_lower_case(np: NowPaymentsClient) -> None:
    coins = await np.merchant_coins()
    assert "btc" in coins and "usdttrc20" in coins
    assert set(coins) == set(await np.currencies())


async def test_min_amount_with_fiat_equivalent(np: NowPaymentsClient) -> None:
    minimum = await np.min_amount("btc", "btc", fiat_equivalent="usd")
    assert minimum.currency_from == "btc"
    assert minimum.min_amount == Decimal("0.0001")
    assert minimum.fiat_equivalent == Decimal("6.5")
    without = await np.min_amount("eth", "eth")
    assert without.min_amount == Decimal("0.002")
    assert without.fiat_equivalent is None


async def test_estimate_sends_the_amount_in_plain_notation(
    np: NowPaymentsClient, sandbox: SandboxHandle
) -> None:
    estimate = await np.estimate(Decimal("1E+2"), "usd", "btc")
    assert estimate.amount_from == 100
    assert estimate.estimated_amount == Decimal("0.00153846")
    [record] = requests_to(sandbox, "/v1/estimate")
    assert "amount=100&" in record["query"]
    small = await np.estimate("3999.50", "usd", "btc")
    assert small.amount_from == Decimal("3999.5")


# ---------------------------------------------------------------- creates


async def test_create_payment_sends_json_with_exact_amounts(
    np: NowPaymentsClient, sandbox: SandboxHandle
) -> None:
    payment = await np.create_payment(
        Decimal("12.50"),
        "usd",
        "btc",
        order_id="order-json",
        order_description="Licence key \u00e9",
        ipn_callback_url="https://shop.example/ipn",
    )
    assert isinstance(payment, CreatedPayment)
    assert payment.payment_id.isdigit()
    assert payment.payment_status is ProviderPaymentStatus.WAITING
    assert payment.price_amount == Decimal("12.5")
    # 12.50 / 65000 rounded up to 8 decimals.
    assert payment.pay_amount == Decimal("0.00019231")
    assert payment.pay_address is not None and payment.pay_address.startswith("bc1q")
    assert payment.purchase_id is not None and payment.purchase_id.isdigit()
    assert payment.order_id == "order-json"
    assert payment.valid_until is not None and payment.valid_until.tzinfo is UTC
    assert payment.model_extra is not None and "network_precision" in payment.model_extra
    [record] = requests_to(sandbox, "/v1/payment")
    assert record["content_type"] == "application/json"
    assert record["body"] == (
        '{"price_amount":12.50,"price_currency":"usd","pay_currency":"btc",'
        '"ipn_callback_url":"https://shop.example/ipn","order_id":"order-json",'
        '"order_description":"Licence key \u00e9"}'
    )


async def test_create_payment_with_memo_coin(np: NowPaymentsClient) -> None:
    payment = await np.create_payment(Decimal(25), "usd", "xrp", order_id="order-memo")
    assert payment.pay_currency == "xrp"
    assert payment.payin_extra_id  # the customer must send this memo/tag


async def test_create_payment_adds_to_a_purchase(np: NowPaymentsClient) -> None:
    first = await np.create_payment(Decimal(30), "usd", "eth", order_id="order-purchase")
    assert first.purchase_id is not None
    second = await np.create_payment(
        Decimal(10), "usd", "eth", order_id="order-purchase", purchase_id=first.purchase_id
    )
    assert second.purchase_id == first.purchase_id
    assert second.payment_id != first.payment_id


async def test_amounts_are_never_floats(np: NowPaymentsClient, sandbox: SandboxHandle) -> None:
    with pytest.raises(TypeError, match="float"):
        await np.create_payment(12.5, "usd", "btc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="price_amount"):
        await np.create_payment("12,50", "usd", "btc")
    assert requests_to(sandbox, "/v1/payment") == []


async def test_sandbox_case_runs_to_finished_and_ipn_matches_status(
    np: NowPaymentsClient, sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    created = await np.create_payment(
        Decimal("19.99"),
        "usd",
        "ltc",
        order_id="order-case",
        ipn_callback_url=ipn_receiver.url,
        case="success",
    )
    sandbox.payment(created.payment_id, wait_for_status="finished")
    sandbox.notifications(created.payment_id, settled=True, payment_status="finished", min_count=1)
    info = await np.get_payment(created.payment_id)
    assert isinstance(info, PaymentInfo)
    assert info.payment_id == created.payment_id
    assert info.payment_status is ProviderPaymentStatus.FINISHED
    assert info.actually_paid is not None and info.actually_paid >= info.pay_amount  # type: ignore[operator]
    assert info.purchase_id == created.purchase_id
    assert info.updated_at is not None and info.updated_at.tzinfo is UTC
    assert info.fee is not None and info.fee.service_fee is not None

    [finished] = [d for d in ipn_receiver.accepted if d.status == "finished"][:1]
    ipn = PaymentInfo.from_ipn_body(finished.body)
    assert ipn.payment_id == info.payment_id
    assert ipn.purchase_id == info.purchase_id
    for field in ("price_amount", "pay_amount", "actually_paid", "outcome_amount"):
        assert getattr(ipn, field) == getattr(info, field), field
    assert ipn.fee == info.fee
    assert ipn.updated_at is not None and info.updated_at is not None
    assert abs(ipn.updated_at - info.updated_at) <= timedelta(milliseconds=1)


async def test_amounts_sent_as_strings_parse_to_the_same_decimals(
    np: NowPaymentsClient, sandbox: SandboxHandle
) -> None:
    created = await np.create_payment(Decimal("12.50"), "eur", "eth")
    as_numbers = await np.get_payment(created.payment_id)
    sandbox.settings(amounts_as_strings=True)
    as_strings = await np.get_payment(int(created.payment_id))
    assert as_strings.pay_amount == as_numbers.pay_amount == Decimal("0.00421875")
    assert as_strings.price_amount == as_numbers.price_amount == Decimal("12.5")
    again = await np.create_payment(Decimal("12.50"), "eur", "eth")
    assert again.pay_amount == Decimal("0.00421875")


async def test_invoice_then_invoice_payment_share_the_invoice_id(
    np: NowPaymentsClient, sandbox: SandboxHandle
) -> None:
    invoice = await np.create_invoice(
        Decimal("12.5"),
        "usd",
        order_id="order-invoice",
        order_description="Two keys",
        ipn_callback_url="https://shop.example/ipn",
        success_url="https://shop.example/ok",
        cancel_url="https://shop.example/cancel",
    )
    assert invoice.id.isdigit()
    assert invoice.price_amount == Decimal("12.5")
    assert invoice.invoice_url == f"{sandbox.base_url}/payment/?iid={invoice.id}"
    assert invoice.created_at is not None and invoice.created_at.tzinfo is UTC

    payment = await np.create_invoice_payment(invoice.id, "ltc", case="success")
    assert payment.invoice_id == invoice.id
    # iid goes out as a number, as in NOWPayments' documented example.
    body = requests_to(sandbox, "/v1/invoice-payment")[0]["body"]
    assert f'"iid":{invoice.id},' in body

    info = await np.get_payment(payment.payment_id)
    assert info.invoice_id == invoice.id
    assert info.order_id == "order-invoice"
    page = await np.list_payments(invoice_id=invoice.id)
    assert [item.payment_id for item in page.data] == [payment.payment_id]


# ---------------------------------------------------------------- error mapping


async def test_wrong_api_key(sandbox: SandboxHandle) -> None:
    async with make_client(sandbox, api_key="wrong-key-0123456789") as client:
        with pytest.raises(InvalidApiKeyError) as caught:
            await client.currencies()
    error = caught.value
    assert error.status_code == 403
    assert error.code == "INVALID_API_KEY"
    assert error.message == "Invalid api key"
    assert error.request_id
    assert error.path == "/v1/currencies"
    assert "wrong-key-0123456789" not in str(error) + repr(error)
    # A 403 is not retried.
    assert len(requests_to(sandbox, "/v1/currencies")) == 1


async def test_below_minimum_amount(np: NowPaymentsClient) -> None:
    with pytest.raises(AmountMinimalError) as caught:
        await np.create_payment(Decimal("0.01"), "usd", "btc")
    assert caught.value.status_code == 400
    assert caught.value.code == "AMOUNT_MINIMAL_ERROR"
    assert not caught.value.outcome_unknown


async def test_unknown_payment(np: NowPaymentsClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        await np.get_payment("5999999999")
    assert caught.value.status_code == 404
    assert caught.value.code == "NOT_FOUND"


async def test_invalid_parameters(np: NowPaymentsClient) -> None:
    with pytest.raises(InvalidRequestParamsError) as caught:
        await np.create_payment(Decimal(20), "usd", "notacoin")
    assert caught.value.code == "INVALID_REQUEST_PARAMS"
    assert "notacoin" in caught.value.message


async def test_payment_id_is_quoted_into_the_path(
    np: NowPaymentsClient, sandbox: SandboxHandle
) -> None:
    with pytest.raises(NotFoundError):
        await np.get_payment("../status")
    assert requests_to(sandbox, "/v1/status") == []


async def test_error_messages_never_carry_secrets() -> None:
    secret_key = "KEY-0123456789abcdef"
    error = api_error_from_response(
        400,
        b'{"status":false,"statusCode":400,"code":"INVALID_REQUEST_PARAMS",'
        b'"message":"bad key KEY-0123456789abcdef"}',
        request_id="r-1",
        method="GET",
        path="/v1/currencies",
        secrets=[secret_key],
    )
    assert isinstance(error, InvalidRequestParamsError)
    assert secret_key not in str(error)
    assert "[redacted]" in str(error)
    cdn = api_error_from_response(502, b"<html><h1>502 Bad Gateway</h1></html>", reason="Bad")
    assert (cdn.code, cdn.status_code, cdn.retryable) == ("HTTP_502", 502, True)
    assert "502 Bad Gateway" in cdn.message
    assert repr(NowPaymentsClient("http://127.0.0.1:9", secret_key)).find(secret_key) == -1


# ---------------------------------------------------------------- JWT


async def test_list_payments_fetches_one_jwt_and_reuses_it(
    np: NowPaymentsClient, sandbox: SandboxHandle
) -> None:
    for n in range(3):
        await np.create_payment(Decimal(20 + n), "usd", "eth", order_id=f"order-list-{n}")
    first = await np.list_payments(limit=2, page=0, sort_by="price_amount", order_by="desc")
    assert [item.price_amount for item in first.data] == [22, 21]
    assert (first.limit, first.page, first.pages_count, first.total) == (2, 0, 2, 3)
    second = await np.list_payments(limit=2, page=1, sort_by="price_amount", order_by="desc")
    assert [item.price_amount for item in second.data] == [20]
    assert all(item.payment_id.isdigit() for item in first.data + second.data)
    assert len(requests_to(sandbox, "/v1/auth")) == 1
    listed = requests_to(sandbox, "/v1/payment/")
    assert [r["bearer"] for r in listed] == [True, True]
    assert all(r["api_key"] == "valid" for r in listed)


async def test_list_payments_date_filters(np: NowPaymentsClient, sandbox: SandboxHandle) -> None:
    await np.create_payment(Decimal(20), "usd", "eth")
    today = datetime.now(UTC).date()
    assert (await np.list_payments(date_from=today)).total == 1
    assert (await np.list_payments(date_to=today - timedelta(days=1))).total == 0
    since = datetime.now(UTC) - timedelta(hours=1)
    assert (await np.list_payments(date_from=since)).total == 1
    queries = [r["query"] for r in requests_to(sandbox, "/v1/payment/")]
    assert f"dateFrom={today.isoformat()}" in queries[0]
    assert "dateFrom=" in queries[2] and "Z" in queries[2]


async def test_list_payments_checks_its_arguments(np: NowPaymentsClient) -> None:
    with pytest.raises(ValueError, match="limit"):
        await np.list_payments(limit=0)
    with pytest.raises(ValueError, match="limit"):
        await np.list_payments(limit=501)
    with pytest.raises(ValueError, match="page"):
        await np.list_payments(page=-1)
    with pytest.raises(ValueError, match="timezone"):
        await np.list_payments(date_from=datetime(2024, 1, 1))  # noqa: DTZ001


async def test_concurrent_calls_share_one_jwt_request(
    np: NowPaymentsClient, sandbox: SandboxHandle
) -> None:
    pages = await asyncio.gather(*(np.list_payments() for _ in range(5)))
    assert all(page.total == 0 for page in pages)
    assert len(requests_to(sandbox, "/v1/auth")) == 1


async def test_jwt_is_renewed_before_it_expires(sandbox_factory: Factory) -> None:
    short = sandbox_factory(jwt_ttl=1.0)
    async with make_client(short) as client:
        await client.list_payments()
        await client.list_payments()
        assert len(requests_to(short, "/v1/auth")) == 1
        # The token lives 1-2 s (iat is whole seconds); renewal comes at 4/5 of that.
        await asyncio.sleep(1.7)
        await client.list_payments()
    assert len(requests_to(short, "/v1/auth")) == 2
    assert [r["status"] for r in requests_to(short, "/v1/payment/")] == [200, 200, 200]


async def test_refused_cached_jwt_is_renewed_once(
    np: NowPaymentsClient, sandbox: SandboxHandle
) -> None:
    await np.list_payments()
    # Stand-in for a token the server revoked early: cached, unexpired, refused.
    np._jwt = "eyJhbGciOiJIUzI1NiJ9.e30.revoked"
    await np.list_payments()
    assert [r["status"] for r in requests_to(sandbox, "/v1/payment/")] == [200, 401, 200]
    assert len(requests_to(sandbox, "/v1/auth")) == 2


async def test_wrong_credentials(sandbox_factory: Factory) -> None:
    guarded = sandbox_factory(email="owner@example.com", password="right-password")
    async with make_client(guarded, email="owner@example.com", password="wrong-pass-77") as client:
        with pytest.raises(NowPaymentsApiError) as caught:
            await client.list_payments()
    assert caught.value.status_code == 401
    assert caught.value.code == "INVALID_CREDENTIALS"
    assert "wrong-pass-77" not in str(caught.value)
    # The wrong password is not hammered: 401 is not retried.
    assert len(requests_to(guarded, "/v1/auth")) == 1


async def test_list_payments_without_credentials(sandbox: SandboxHandle) -> None:
    async with make_client(sandbox, email="", password="") as client:
        assert not client.has_credentials
        with pytest.raises(MissingCredentialsError):
            await client.list_payments()
    assert requests_to(sandbox) == []


async def test_status_call_demanding_a_jwt_is_repeated_once_with_one(
    np: NowPaymentsClient, sandbox: SandboxHandle
) -> None:
    created = await np.create_payment(Decimal(20), "usd", "btc")
    sandbox.settings(status_requires_jwt=True)
    info = await np.get_payment(created.payment_id)
    assert info.payment_id == created.payment_id
    path = f"/v1/payment/{created.payment_id}"
    assert [(r["status"], r["bearer"]) for r in requests_to(sandbox, path)] == [
        (401, False),
        (200, True),
    ]
    # From then on the JWT goes with the first attempt.
    await np.get_payment(created.payment_id)
    assert [(r["status"], r["bearer"]) for r in requests_to(sandbox, path)][2:] == [(200, True)]


async def test_status_call_demanding_a_jwt_without_credentials(sandbox: SandboxHandle) -> None:
    created = sandbox.create_payment()
    sandbox.settings(status_requires_jwt=True)
    async with make_client(sandbox, email="", password="") as client:
        with pytest.raises(AuthRequiredError) as caught:
            await client.get_payment(created["payment_id"])
    assert caught.value.code == "AUTH_REQUIRED"
    assert caught.value.status_code == 401


# ---------------------------------------------------------------- retries


async def test_reads_are_retried_on_5xx(np: NowPaymentsClient, sandbox: SandboxHandle) -> None:
    sandbox.fault("/v1/currencies", 503, count=2)
    assert "btc" in await np.currencies()
    assert [r["status"] for r in requests_to(sandbox, "/v1/currencies")] == [503, 503, 200]


async def test_reads_are_retried_on_429_honouring_retry_after(sandbox: SandboxHandle) -> None:
    sandbox.fault("/v1/merchant/coins", 429, count=1, retry_after="0.3")
    async with make_client(sandbox, max_retry_after=5.0) as client:
        started = time.monotonic()
        assert "btc" in await client.merchant_coins()
        elapsed = time.monotonic() - started
    assert elapsed >= 0.3
    assert [r["status"] for r in requests_to(sandbox, "/v1/merchant/coins")] == [429, 200]


async def test_retry_after_is_capped(np: NowPaymentsClient, sandbox: SandboxHandle) -> None:
    sandbox.fault("/v1/estimate", 429, count=1, retry_after="3600")
    started = time.monotonic()
    await np.estimate(Decimal(10), "usd", "btc")
    assert time.monotonic() - started < 2


async def test_cdn_error_page_after_retries(sandbox: SandboxHandle) -> None:
    sandbox.fault("/v1/payment/{payment_id}", 502, count=10, html=True)
    async with make_client(sandbox, max_retries=2) as client:
        with pytest.raises(NowPaymentsApiError) as caught:
            await client.get_payment("5000000000")
    error = caught.value
    assert (error.status_code, error.code, error.retryable) == (502, "HTTP_502", True)
    assert "502" in error.message
    assert error.request_id
    assert len(requests_to(sandbox, "/v1/payment/5000000000")) == 3


async def test_auth_is_retried_on_5xx(np: NowPaymentsClient, sandbox: SandboxHandle) -> None:
    sandbox.fault("/v1/auth", 500, count=1)
    await np.list_payments()
    assert [r["status"] for r in requests_to(sandbox, "/v1/auth")] == [500, 200]


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_create_payment_is_not_retried_on_5xx(
    np: NowPaymentsClient, sandbox: SandboxHandle, status: int
) -> None:
    sandbox.fault("/v1/payment", status, method="POST", count=5)
    with pytest.raises(NowPaymentsApiError) as caught:
        await np.create_payment(Decimal(20), "usd", "btc", order_id="order-5xx")
    assert caught.value.status_code == status
    assert caught.value.outcome_unknown
    assert len(requests_to(sandbox, "/v1/payment")) == 1


async def test_create_invoice_and_invoice_payment_are_not_retried_on_5xx(
    np: NowPaymentsClient, sandbox: SandboxHandle
) -> None:
    sandbox.fault("/v1/invoice", 500, count=5)
    with pytest.raises(NowPaymentsApiError) as invoice_error:
        await np.create_invoice(Decimal(20), "usd")
    assert invoice_error.value.outcome_unknown
    assert len(requests_to(sandbox, "/v1/invoice")) == 1

    sandbox.control.delete("/sandbox/faults").raise_for_status()
    invoice = sandbox.create_invoice()
    sandbox.fault("/v1/invoice-payment", 503, count=5)
    with pytest.raises(NowPaymentsApiError) as payment_error:
        await np.create_invoice_payment(invoice["id"], "btc")
    assert payment_error.value.outcome_unknown
    assert len(requests_to(sandbox, "/v1/invoice-payment")) == 1


async def test_create_is_not_retried_on_429(np: NowPaymentsClient, sandbox: SandboxHandle) -> None:
    sandbox.fault("/v1/payment", 429, method="POST", retry_after="2")
    with pytest.raises(NowPaymentsApiError) as caught:
        await np.create_payment(Decimal(20), "usd", "btc")
    assert caught.value.status_code == 429
    assert caught.value.retry_after == 2.0
    # A 429 is a refusal: nothing was created.
    assert not caught.value.outcome_unknown
    assert len(requests_to(sandbox, "/v1/payment")) == 1


async def test_read_timeout_is_retried(sandbox: SandboxHandle) -> None:
    created = sandbox.create_payment()
    sandbox.fault("/v1/payment/{payment_id}", delay=1.0, count=1)
    async with make_client(sandbox, timeout=0.25) as client:
        info = await client.get_payment(created["payment_id"])
    assert info.payment_id == created["payment_id"]


async def test_read_timeouts_exhaust_retries(sandbox: SandboxHandle) -> None:
    sandbox.fault("/v1/currencies", delay=1.0, count=10)
    async with make_client(sandbox, timeout=0.1, max_retries=2) as client:
        with pytest.raises(NowPaymentsUnavailable) as caught:
            await client.currencies()
    assert caught.value.attempts == 3
    assert "ReadTimeout" in str(caught.value)
    assert not caught.value.outcome_unknown
    assert sandbox.api_key not in str(caught.value)


async def test_create_timing_out_is_not_retried(sandbox: SandboxHandle) -> None:
    sandbox.fault("/v1/payment", delay=0.4, method="POST", count=5)
    async with make_client(sandbox, timeout=0.1) as client:
        with pytest.raises(NowPaymentsUnavailable) as caught:
            await client.create_payment(Decimal(20), "usd", "btc", order_id="order-timeout")
    # Whether NOWPayments created it is unknown: the caller must look before retrying.
    assert caught.value.outcome_unknown
    assert caught.value.attempts == 1
    assert "may have been processed" in str(caught.value)
    await asyncio.sleep(0.6)  # let the sandbox finish the delayed request
    assert len(requests_to(sandbox, "/v1/payment")) == 1


async def test_connection_refused_is_retried_then_reported() -> None:
    """A real closed port on loopback: every attempt fails with httpx.ConnectError."""
    client = NowPaymentsClient(
        f"http://127.0.0.1:{free_port()}", "key-123456", max_retries=2, backoff_base=0.001
    )
    async with client:
        with pytest.raises(NowPaymentsUnavailable) as read_error:
            await client.currencies()
        with pytest.raises(NowPaymentsUnavailable) as create_error:
            await client.create_payment(Decimal(20), "usd", "btc")
    assert read_error.value.attempts == 3
    # Nothing was ever sent, so the create was repeated too, and nothing can exist.
    assert create_error.value.attempts == 3
    assert not create_error.value.outcome_unknown
    assert "key-123456" not in str(create_error.value)


class _FlakyTransport(httpx.AsyncBaseTransport):
    """Real HTTP to the sandbox, with a transport fault injected on chosen attempts."""

    def __init__(self, fail: Callable[[int], Exception | None], *, after_send: bool) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._fail = fail
        self._after_send = after_send
        self.attempts = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        error = self._fail(self.attempts)
        if error is None:
            return await self._inner.handle_async_request(request)
        if self._after_send:
            response = await self._inner.handle_async_request(request)
            await response.aread()
            await response.aclose()
        raise error

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_create_is_retried_when_the_connection_was_never_made(
    sandbox: SandboxHandle,
) -> None:
    """Request mocking: a connect failure on the first attempt only, which the sandbox
    cannot produce (it is either listening or not). The create is repeated because
    nothing was sent, and exactly one payment exists.
    """
    transport = _FlakyTransport(
        lambda n: httpx.ConnectError("connection refused") if n == 1 else None, after_send=False
    )
    async with make_client(sandbox, transport=transport) as client:
        payment = await client.create_payment(Decimal(20), "usd", "btc", order_id="order-conn")
    assert transport.attempts == 2
    assert [p["payment_id"] for p in payments_of_order(sandbox, "order-conn")] == [
        int(payment.payment_id)
    ]


async def test_connection_dropped_after_sending_a_create_is_not_retried(
    sandbox: SandboxHandle,
) -> None:
    """Request mocking: the request reaches the sandbox, then the connection is reset
    before the answer arrives, which the sandbox cannot produce. The payment exists, so
    the client must not repeat the create; it reports an unknown outcome instead.
    """
    transport = _FlakyTransport(
        lambda n: httpx.ReadError("connection reset by peer"), after_send=True
    )
    async with make_client(sandbox, transport=transport) as client:
        with pytest.raises(NowPaymentsUnavailable) as caught:
            await client.create_payment(Decimal(20), "usd", "btc", order_id="order-reset")
    assert caught.value.outcome_unknown
    assert transport.attempts == 1
    assert len(payments_of_order(sandbox, "order-reset")) == 1


async def test_connection_dropped_on_a_read_is_retried(sandbox: SandboxHandle) -> None:
    """Request mocking: the server closes the connection mid-answer on the first attempt
    (httpx.RemoteProtocolError), which the sandbox cannot produce; a read is safe to repeat.
    """
    transport = _FlakyTransport(
        lambda n: httpx.RemoteProtocolError("peer closed connection") if n == 1 else None,
        after_send=True,
    )
    async with make_client(sandbox, transport=transport) as client:
        assert await client.status() == "OK"
    assert transport.attempts == 2


# ---------------------------------------------------------------- logging, lifecycle, encoding


async def test_one_log_line_per_call_without_secrets(
    sandbox: SandboxHandle, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with make_client(sandbox) as client:
        created = await client.create_payment(Decimal(20), "usd", "btc")
        await client.list_payments()
        token = client._jwt
    assert token
    ours = [r for r in caplog.records if r.name == "cryptocheckout.nowpayments"]
    assert len(ours) == 3  # create, auth, list
    create_line = ours[0].getMessage()
    request_id = requests_to(sandbox, "/v1/payment")[0]["request_id"]
    assert "POST /v1/payment -> 201" in create_line
    assert " ms" in create_line and request_id in create_line
    assert getattr(ours[0], "np_request_id") == request_id  # noqa: B009
    assert getattr(ours[0], "np_status") == 201  # noqa: B009
    everything = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (sandbox.api_key, MERCHANT_PASSWORD, token):
        assert secret not in everything
    assert created.payment_id


async def test_client_closes_its_pool(sandbox: SandboxHandle) -> None:
    client = make_client(sandbox)
    assert await client.status() == "OK"
    await client.aclose()
    with pytest.raises(RuntimeError):
        await client.status()
    async with make_client(sandbox) as scoped:
        assert await scoped.status() == "OK"
    with pytest.raises(RuntimeError):
        await scoped.status()


def test_default_timeout_is_explicit() -> None:
    assert DEFAULT_TIMEOUT.connect == 5.0
    assert DEFAULT_TIMEOUT.read == 15.0


def test_base_url_may_carry_a_trailing_slash_or_v1() -> None:
    assert NowPaymentsClient("https://api.nowpayments.io/", "k").base_url == (
        "https://api.nowpayments.io"
    )
    assert NowPaymentsClient("https://api.nowpayments.io/v1/", "k").base_url == (
        "https://api.nowpayments.io"
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"a": Decimal("1E-7")}, '{"a":0.0000001}'),
        ({"a": Decimal("12.50")}, '{"a":12.50}'),
        ({"a": Decimal("1E+3")}, '{"a":1000}'),
        ({"a": Decimal("12345678901.234567891")}, '{"a":12345678901.234567891}'),
        (
            {"a": 5, "b": True, "c": None, "d": "\u00e9/\u2028"},
            '{"a":5,"b":true,"c":null,"d":"\u00e9/\u2028"}',
        ),
        ([1, "x"], '[1,"x"]'),
    ],
)
def test_encode_json(value: object, text: str) -> None:
    assert encode_json(value) == text.encode()


@pytest.mark.parametrize("value", [{"a": 1.5}, {"a": Decimal("NaN")}, {1: 2}, {"a": object()}])
def test_encode_json_refuses_what_json_cannot_carry_exactly(value: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        encode_json(value)


def test_every_error_is_a_nowpayments_error() -> None:
    for cls in (
        NowPaymentsApiError,
        InvalidApiKeyError,
        NowPaymentsUnavailable,
        MissingCredentialsError,
    ):
        assert issubclass(cls, NowPaymentsError)


@given(st.decimals(allow_nan=False, allow_infinity=False).filter(lambda d: abs(d.adjusted()) < 30))
def test_encoded_amounts_read_back_exactly(value: Decimal) -> None:
    text = encode_json({"price_amount": value})
    assert b"e" not in text.split(b":")[1].lower()
    assert loads_exact(text)["price_amount"] == value


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("3", 3.0),
        ("0.5", 0.5),
        ("-4", 0.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("soon", None),
        ("nan", None),
    ],
)
def test_retry_after_header_forms(header: str | None, seconds: float | None) -> None:
    assert _retry_after(header) == seconds


def test_retry_after_http_date_in_the_future() -> None:
    moment = datetime.now(UTC) + timedelta(seconds=120)
    seconds = _retry_after(moment.strftime("%a, %d %b %Y %H:%M:%S GMT"))
    assert seconds is not None and 100 < seconds <= 120


async def test_unsupported_scheme_fails_at_once() -> None:
    async with NowPaymentsClient("ftp://127.0.0.1", "k", backoff_base=0.001) as client:
        with pytest.raises(NowPaymentsUnavailable) as caught:
            await client.status()
    assert caught.value.attempts == 1

"""Parsing of NOWPayments answers and IPN bodies: ids, exact amounts, timestamps, unknown fields."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from cryptocheckout.nowpayments.errors import NowPaymentsPayloadError
from cryptocheckout.nowpayments.models import (
    CreatedPayment,
    Estimate,
    FixedRateCurrency,
    Invoice,
    MinAmount,
    PaymentInfo,
    PaymentList,
    ProviderPaymentStatus,
    format_amount,
    is_payment_notification,
    loads_exact,
    parse_amount,
    parse_id,
    parse_status,
    parse_timestamp,
)

# An IPN as NOWPayments sends it today: keys sorted, compact, numbers as
# JavaScript prints them (1e-7), updated_at in epoch milliseconds, nested fee.
REAL_IPN = (
    b'{"actually_paid":0.00017352,"actually_paid_at_fiat":0,"fee":{"currency":"btc",'
    b'"depositFee":1e-7,"serviceFee":0.0000009,"withdrawalFee":0},"invoice_id":5738940253,'
    b'"order_description":"Licence key x 1","order_id":"3f0c7a62-2c2d-4e0e-9a9b-5d0b3e1c9f10",'
    b'"outcome_amount":0.0001701,"outcome_currency":"btc","parent_payment_id":null,'
    b'"pay_address":"bc1qxy2kgdygjrsqtzq2n0yrf2493p83kkfjhx0wlh","pay_amount":0.00017352,'
    b'"pay_currency":"btc","payin_extra_id":null,"payment_extra_ids":null,'
    b'"payment_id":5077149092,"payment_status":"finished","price_amount":12.5,'
    b'"price_currency":"usd","purchase_id":"6084744717","updated_at":1685455860170}'
)

# The documented status answer: payment_id a number, ISO timestamps, amounts numbers.
STATUS_ANSWER = {
    "payment_id": 5524759814,
    "payment_status": "finished",
    "pay_address": "TNDFkiSmBQorNFacb3735q8MnT29sn8BLn",
    "price_amount": 5,
    "price_currency": "usd",
    "pay_amount": Decimal("165.652609"),
    "actually_paid": 180,
    "pay_currency": "trx",
    "order_id": "RGDBP-21314",
    "order_description": "Apple Macbook Pro 2019 x 1",
    "purchase_id": "4944856743",
    "created_at": "2020-12-16T14:30:43.306Z",
    "updated_at": "2020-12-16T14:40:46.523Z",
    "outcome_amount": Decimal("178.9005"),
    "outcome_currency": "trx",
}


# ---------------------------------------------------------------- parse_id


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5077149092, "5077149092"),
        ("5077149092", "5077149092"),
        (" 5077149092 ", "5077149092"),
        (Decimal("5077149092.0"), "5077149092"),
        (Decimal("5.077149092e9"), "5077149092"),
        ("00042", "00042"),
        ("RGDBP-21314", "RGDBP-21314"),
        (None, None),
        ("", None),
    ],
)
def test_parse_id_accepts_strings_and_numbers(value: object, expected: str | None) -> None:
    assert parse_id(value) == expected


@pytest.mark.parametrize("value", [True, 12.0, Decimal("1.5"), Decimal("NaN"), [1], {"id": 1}])
def test_parse_id_rejects_non_ids(value: object) -> None:
    with pytest.raises(ValueError, match="id"):
        parse_id(value)


def test_ids_from_json_numbers_and_strings_normalise_alike() -> None:
    as_number = loads_exact(b'{"payment_id": 5077149092}')["payment_id"]
    as_string = loads_exact(b'{"payment_id": "5077149092"}')["payment_id"]
    assert parse_id(as_number) == parse_id(as_string) == "5077149092"


# ---------------------------------------------------------------- parse_amount


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (50, "50"),
        ("1000", "1000"),
        ("12.50", "12.50"),
        (Decimal("0.30000003"), "0.30000003"),
        # 20 significant digits, more than a double holds.
        ("12345678901.234567891", "12345678901.234567891"),
        ("0.12345678901234567890", "0.12345678901234567890"),
        ("1e-7", "1E-7"),
        ("1E-7", "1E-7"),
        (" 2.5 ", "2.5"),
        ("-0.5", "-0.5"),
        (None, None),
        ("", None),
    ],
)
def test_parse_amount_keeps_exact_digits(value: object, expected: str | None) -> None:
    result = parse_amount(value)
    if expected is None:
        assert result is None
    else:
        assert result is not None
        assert str(result) == expected


def test_json_numbers_keep_their_text_through_loads_exact() -> None:
    data = loads_exact(
        b'{"a": 12345678901.234567891, "b": 1e-7, "c": 0.1, "d": 20, "e": 100.0, "f": 1e21}'
    )
    amounts = {key: parse_amount(value) for key, value in data.items()}
    assert amounts == {
        "a": Decimal("12345678901.234567891"),
        "b": Decimal("1E-7"),
        "c": Decimal("0.1"),
        "d": Decimal(20),
        "e": Decimal("100.0"),
        "f": Decimal("1E+21"),
    }
    assert str(amounts["a"]) == "12345678901.234567891"
    # The float route would have changed both of these.
    assert amounts["c"] != Decimal(float("0.1"))
    assert amounts["a"] != Decimal(str(float("12345678901.234567891")))


@pytest.mark.parametrize(
    "value",
    ["abc", "NaN", "nan", "Infinity", "-inf", "1_000", "0x10", "1,5", "12.5 usd", "--1", "."],
)
def test_parse_amount_rejects_text_that_is_not_a_number(value: str) -> None:
    with pytest.raises(ValueError, match="not a decimal amount"):
        parse_amount(value)


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_parse_amount_rejects_non_finite_decimals(value: Decimal) -> None:
    with pytest.raises(ValueError, match="finite"):
        parse_amount(value)


def test_parse_amount_refuses_floats_with_a_hint() -> None:
    with pytest.raises(ValueError, match="parse_float=Decimal"):
        parse_amount(0.1)


@pytest.mark.parametrize("value", [True, False, [1], {"amount": 1}])
def test_parse_amount_rejects_other_types(value: object) -> None:
    with pytest.raises(ValueError, match="not an amount"):
        parse_amount(value)


@pytest.mark.parametrize("document", [b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}'])
def test_loads_exact_rejects_nan_and_infinity(document: bytes) -> None:
    with pytest.raises(ValueError, match="not a valid JSON number"):
        loads_exact(document)


@given(
    st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(
        lambda d: abs(d.adjusted()) < 40
    )
)
def test_any_decimal_survives_plain_text_and_json_exactly(value: Decimal) -> None:
    text = format_amount(value)
    assert "e" not in text.lower()
    assert parse_amount(text) == value
    assert parse_amount(loads_exact(f'{{"x": {text}}}')["x"]) == value


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("1E-7"), "0.0000001"),
        (Decimal("1E+3"), "1000"),
        (Decimal("12.50"), "12.50"),
        (Decimal("0.30000003"), "0.30000003"),
    ],
)
def test_format_amount_writes_plain_notation(value: Decimal, text: str) -> None:
    assert format_amount(value) == text


# ---------------------------------------------------------------- parse_timestamp


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2020-12-16T14:30:43.306Z", datetime(2020, 12, 16, 14, 30, 43, 306000, tzinfo=UTC)),
        ("2020-12-16T16:30:43.306+02:00", datetime(2020, 12, 16, 14, 30, 43, 306000, tzinfo=UTC)),
        ("2020-12-16T14:30:43", datetime(2020, 12, 16, 14, 30, 43, tzinfo=UTC)),
        ("2020-12-16 14:30:43.306123456Z", datetime(2020, 12, 16, 14, 30, 43, 306123, tzinfo=UTC)),
        (1685455860170, datetime(2023, 5, 30, 14, 11, 0, 170000, tzinfo=UTC)),
        ("1685455860170", datetime(2023, 5, 30, 14, 11, 0, 170000, tzinfo=UTC)),
        (Decimal("1685455860170.5"), datetime(2023, 5, 30, 14, 11, 0, 170500, tzinfo=UTC)),
        # Too small to be milliseconds of a real event: epoch seconds.
        (1685455860, datetime(2023, 5, 30, 14, 11, 0, tzinfo=UTC)),
        (None, None),
        ("", None),
    ],
)
def test_parse_timestamp_iso_and_epoch_ms(value: object, expected: datetime | None) -> None:
    result = parse_timestamp(value)
    assert result == expected
    if result is not None:
        assert result.utcoffset() == timedelta(0)


def test_parse_timestamp_converts_aware_datetimes_to_utc() -> None:
    moment = datetime(2024, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=-5)))
    assert parse_timestamp(moment) == datetime(2024, 1, 1, 17, 0, tzinfo=UTC)
    assert parse_timestamp(moment).tzinfo is UTC  # type: ignore[union-attr]


@pytest.mark.parametrize("value", ["yesterday", "2020-13-01T00:00:00Z", True, [1], 1.5e12])
def test_parse_timestamp_rejects_garbage(value: object) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        parse_timestamp(value)


# ---------------------------------------------------------------- statuses


def test_every_documented_status_is_known() -> None:
    words = [
        "waiting",
        "confirming",
        "confirmed",
        "sending",
        "partially_paid",
        "finished",
        "failed",
        "refunded",
        "expired",
        "cancelled",
    ]
    assert [parse_status(word) for word in words] == list(ProviderPaymentStatus)


def test_unknown_status_word_is_kept_not_rejected() -> None:
    assert parse_status("FINISHED") is ProviderPaymentStatus.FINISHED
    assert parse_status("wrapping") == "wrapping"
    info = PaymentInfo.parse_mapping({"payment_id": 1, "payment_status": "wrapping"})
    assert info.payment_status == "wrapping"
    assert info.status == "wrapping"
    assert not info.status_known


@pytest.mark.parametrize("value", [None, "", 3, True])
def test_missing_or_non_text_status_is_rejected(value: object) -> None:
    with pytest.raises(ValueError, match="payment status"):
        parse_status(value)


# ---------------------------------------------------------------- PaymentInfo / IPN


def test_real_ipn_body_parses_exactly() -> None:
    info = PaymentInfo.from_ipn_body(REAL_IPN)
    assert info.payment_id == "5077149092"
    assert info.invoice_id == "5738940253"
    assert info.purchase_id == "6084744717"
    assert info.payment_status is ProviderPaymentStatus.FINISHED
    assert info.status_known
    assert info.price_amount == Decimal("12.5")
    assert info.pay_amount == Decimal("0.00017352")
    assert str(info.actually_paid) == "0.00017352"
    assert info.actually_paid_at_fiat == 0
    assert info.outcome_amount == Decimal("0.0001701")
    assert info.updated_at == datetime(2023, 5, 30, 14, 11, 0, 170000, tzinfo=UTC)
    assert info.parent_payment_id is None
    assert not info.is_repeat_deposit
    assert info.fee is not None
    assert info.fee.currency == "btc"
    assert info.fee.deposit_fee == Decimal("1E-7")
    assert info.fee.service_fee == Decimal("0.0000009")
    assert info.fee.withdrawal_fee == 0
    assert info.order_id == "3f0c7a62-2c2d-4e0e-9a9b-5d0b3e1c9f10"


def test_ipn_unknown_fields_are_kept_with_exact_values() -> None:
    body = json.loads(REAL_IPN)
    document = (
        REAL_IPN[:-1] + b',"burning_percent":"0.5","network":"btc","rate":12345.678901234567891}'
    )
    info = PaymentInfo.from_ipn_body(document)
    assert info.model_extra == {
        "burning_percent": "0.5",
        "network": "btc",
        "rate": Decimal("12345.678901234567891"),
    }
    assert info.payment_id == str(body["payment_id"])


def test_ipn_fee_keeps_unknown_nested_fields() -> None:
    document = (
        b'{"payment_id":1,"payment_status":"waiting",'
        b'"fee":{"currency":"usdttrc20","depositFee":"0.5","networkFee":0.1}}'
    )
    info = PaymentInfo.from_ipn_body(document)
    assert info.fee is not None
    assert info.fee.deposit_fee == Decimal("0.5")
    assert info.fee.model_extra == {"networkFee": Decimal("0.1")}


def test_repeat_deposit_ipn() -> None:
    document = (
        b'{"actually_paid":"0.0001","parent_payment_id":5077149092,"pay_amount":"0.0001",'
        b'"payment_id":"6011223344","payment_status":"partially_paid","updated_at":"1685455999000"}'
    )
    info = PaymentInfo.from_ipn_body(document)
    assert info.is_repeat_deposit
    assert info.parent_payment_id == "5077149092"
    assert info.payment_status is ProviderPaymentStatus.PARTIALLY_PAID
    assert info.actually_paid == Decimal("0.0001")
    assert info.updated_at == datetime(2023, 5, 30, 14, 13, 19, tzinfo=UTC)


def test_status_answer_parses() -> None:
    info = PaymentInfo.parse_mapping(STATUS_ANSWER)
    assert info.payment_id == "5524759814"
    assert info.price_amount == 5
    assert info.pay_amount == Decimal("165.652609")
    assert info.created_at == datetime(2020, 12, 16, 14, 30, 43, 306000, tzinfo=UTC)
    assert info.invoice_id is None


def test_ipn_body_as_str_is_accepted() -> None:
    assert PaymentInfo.from_ipn_body(REAL_IPN.decode()).payment_id == "5077149092"


def test_json_dump_writes_amounts_in_plain_notation() -> None:
    dumped = PaymentInfo.from_ipn_body(REAL_IPN).model_dump(mode="json")
    assert dumped["fee"]["deposit_fee"] == "0.0000001"
    assert dumped["price_amount"] == "12.5"
    assert dumped["payment_id"] == "5077149092"
    assert dumped["updated_at"] == "2023-05-30T14:11:00.170000Z"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"not json", "not valid JSON"),
        (b'{"payment_id": 1, "payment_status": "waiting", "pay_amount": NaN}', "not valid JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"payment_status": "waiting"}', "payment_id"),
        (b'{"payment_id": 1}', "payment_status"),
        (b'{"payment_id": 1, "payment_status": "waiting", "price_amount": "12,5"}', "price_amount"),
        (b'{"payment_id": 1.5, "payment_status": "waiting"}', "payment_id"),
        (b'{"payment_id": 1, "payment_status": "waiting", "updated_at": "soon"}', "updated_at"),
        (b'{"payment_id": 1, "payment_status": "waiting", "fee": {"depositFee": "x"}}', "fee"),
    ],
)
def test_invalid_ipn_bodies_raise_a_clear_error(document: bytes, message: str) -> None:
    with pytest.raises(NowPaymentsPayloadError, match=message) as caught:
        PaymentInfo.from_ipn_body(document)
    assert isinstance(caught.value, ValueError)
    assert "PaymentInfo" in str(caught.value)


def test_payout_notification_is_told_apart() -> None:
    payout = {"id": "5000000713", "batch_withdrawal_id": "5000000000", "status": "FINISHED"}
    assert not is_payment_notification(payout)
    assert is_payment_notification(json.loads(REAL_IPN))
    assert not is_payment_notification([1])
    with pytest.raises(NowPaymentsPayloadError, match="payment_id"):
        PaymentInfo.from_ipn_body(json.dumps(payout).encode())


def test_models_are_frozen() -> None:
    info = PaymentInfo.from_ipn_body(REAL_IPN)
    with pytest.raises(ValidationError):
        info.payment_id = "2"  # type: ignore[misc]


# ---------------------------------------------------------------- other answers


def test_created_payment_with_string_id() -> None:
    answer = loads_exact(
        b'{"payment_id":"5745459419","payment_status":"waiting",'
        b'"pay_address":"3EZ2uTdVDAMFXTfc6uLDDKR6o8qKBZXVkj","price_amount":3999.5,'
        b'"price_currency":"usd","pay_amount":0.17070286,"pay_currency":"btc",'
        b'"order_id":"RGDBP-21314","order_description":"Apple Macbook Pro 2019 x 1",'
        b'"ipn_callback_url":"https://nowpayments.io","created_at":"2020-12-22T15:00:22.742Z",'
        b'"updated_at":"2020-12-22T15:00:22.742Z","purchase_id":"5837122679",'
        b'"amount_received":null,"payin_extra_id":null,"smart_contract":"","network":"btc",'
        b'"network_precision":8,"time_limit":null,"burning_percent":null,'
        b'"expiration_estimate_date":"2020-12-23T15:00:22.742Z"}'
    )
    payment = CreatedPayment.parse_mapping(answer)
    assert payment.payment_id == "5745459419"
    assert payment.price_amount == Decimal("3999.5")
    assert payment.pay_amount == Decimal("0.17070286")
    assert payment.expiration_estimate_date == datetime(2020, 12, 23, 15, 0, 22, 742000, tzinfo=UTC)
    assert payment.model_extra is not None
    assert payment.model_extra["network_precision"] == 8
    assert payment.model_extra["smart_contract"] == ""


def test_created_payment_with_memo_and_numeric_purchase_id() -> None:
    payment = CreatedPayment.parse_mapping(
        {
            "payment_id": "6000000001",
            "payment_status": "waiting",
            "pay_address": "rLpumSZQNJ6Cve7hAnfbyT5hFb4tG2KyN",
            "payin_extra_id": 1234567,
            "pay_amount": "25.123456",
            "purchase_id": 6000000002,
        }
    )
    assert payment.payin_extra_id == "1234567"
    assert payment.purchase_id == "6000000002"
    assert payment.pay_amount == Decimal("25.123456")


def test_invoice_with_string_price_and_id_matching_later_invoice_id() -> None:
    invoice = Invoice.parse_mapping(
        {
            "id": "4522625843",
            "token_id": "Tbi0fsbFMK",
            "order_id": "RGDBP-21314",
            "order_description": "Apple Macbook Pro 2019 x 1",
            "price_amount": "1000",
            "price_currency": "usd",
            "pay_currency": None,
            "ipn_callback_url": "https://nowpayments.io",
            "invoice_url": "https://nowpayments.io/payment/?iid=4522625843",
            "success_url": "https://nowpayments.io",
            "cancel_url": "https://nowpayments.io",
            "created_at": "2020-12-22T15:05:58.290Z",
            "updated_at": "2020-12-22T15:05:58.290Z",
            "is_fixed_rate": False,
            "is_fee_paid_by_user": False,
            "customer_email": None,
        }
    )
    assert invoice.id == "4522625843"
    assert invoice.price_amount == Decimal("1000")
    assert invoice.pay_currency is None
    assert invoice.invoice_url == "https://nowpayments.io/payment/?iid=4522625843"
    later = PaymentInfo.parse_mapping(
        {"payment_id": 1, "payment_status": "waiting", "invoice_id": 4522625843}
    )
    assert later.invoice_id == invoice.id


def test_min_amount_estimate_and_fixed_rate_currency() -> None:
    minimum = MinAmount.parse_mapping(
        loads_exact(
            b'{"currency_from":"btc","currency_to":"btc","min_amount":0.0000626,'
            b'"fiat_equivalent":"2.77612004"}'
        )
    )
    assert minimum.min_amount == Decimal("0.0000626")
    assert minimum.fiat_equivalent == Decimal("2.77612004")
    estimate = Estimate.parse_mapping(
        loads_exact(
            b'{"currency_from":"usd","amount_from":3999.5,"currency_to":"btc",'
            b'"estimated_amount":"0.17061637"}'
        )
    )
    assert estimate.amount_from == Decimal("3999.5")
    assert estimate.estimated_amount == Decimal("0.17061637")
    currency = FixedRateCurrency.parse_mapping(
        {"currency": "btc", "min_amount": Decimal("0.0002"), "max_amount": "1.5"}
    )
    assert currency.max_amount == Decimal("1.5")


def test_payment_list_with_mixed_item_types() -> None:
    page = PaymentList.parse_mapping(
        loads_exact(
            b'{"data":[{"payment_id":5524759814,"payment_status":"finished",'
            b'"invoice_id":4522625843,"price_amount":5,"pay_amount":"165.652609",'
            b'"created_at":"2020-12-16T14:30:43.306Z","updated_at":"2020-12-16T14:40:46.523Z"},'
            b'{"payment_id":"5524759815","payment_status":"waiting","price_amount":"5.00"}],'
            b'"limit":10,"page":0,"pagesCount":1,"total":2}'
        )
    )
    assert [item.payment_id for item in page.data] == ["5524759814", "5524759815"]
    assert page.data[0].invoice_id == "4522625843"
    assert page.data[1].price_amount == Decimal("5.00")
    assert (page.limit, page.page, page.pages_count, page.total) == (10, 0, 1, 2)

"""The sandbox's notifications: real status sequences, signed bodies, resends and chaos."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import pytest

from cryptocheckout.nowpayments.models import PaymentInfo, loads_exact
from cryptocheckout.nowpayments.signature import canonical_ipn_body, verify_ipn_signature
from tests.nowpayments.conftest import (
    RESEND_ATTEMPTS,
    Delivery,
    IpnReceiver,
    SandboxHandle,
)

IPN_FIELDS = {
    "actually_paid",
    "actually_paid_at_fiat",
    "fee",
    "invoice_id",
    "order_description",
    "order_id",
    "outcome_amount",
    "outcome_currency",
    "parent_payment_id",
    "pay_address",
    "pay_amount",
    "pay_currency",
    "payin_extra_id",
    "payment_extra_ids",
    "payment_id",
    "payment_status",
    "price_amount",
    "price_currency",
    "purchase_id",
    "updated_at",
}
PAID_SEQUENCE = ["confirming", "confirmed", "sending", "finished"]


def statuses(deliveries: list[Delivery]) -> list[str]:
    return [d.status for d in deliveries]


def assert_signed(delivery: Delivery, secret: str) -> dict[str, Any]:
    """The body is signed with the IPN secret and is exactly its canonical form."""
    assert delivery.headers["content-type"] == "application/json"
    assert verify_ipn_signature(delivery.body, delivery.signature, secret)
    assert not verify_ipn_signature(delivery.body, delivery.signature, secret + "x")
    payload = json.loads(delivery.body)
    assert delivery.body == canonical_ipn_body(payload)
    return dict(loads_exact(delivery.body))


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("success", ["waiting", *PAID_SEQUENCE]),
        ("partially_paid", ["waiting", "partially_paid"]),
        ("failed", ["waiting", "failed"]),
        ("expired", ["waiting", "expired"]),
    ],
)
def test_case_sends_the_signed_sequence_of_its_outcome(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver, case: str, expected: list[str]
) -> None:
    created = sandbox.create_payment(
        price_amount=20,
        ipn_callback_url=ipn_receiver.url,
        order_id="order-42",
        order_description="A licence",
        case=case,
    )
    sandbox.notifications(created["payment_id"], settled=True)
    deliveries = ipn_receiver.deliveries
    assert statuses(deliveries) == expected
    pay_amount = Decimal("0.0003077")
    for delivery in deliveries:
        body = assert_signed(delivery, sandbox.ipn_secret)
        assert set(body) == IPN_FIELDS
        # IPNs give payment ids as numbers (the purchase id stays a string), the time as
        # epoch milliseconds, and fee as an object.
        assert body["payment_id"] == int(created["payment_id"])
        assert body["purchase_id"] == created["purchase_id"]
        assert body["invoice_id"] is None and body["parent_payment_id"] is None
        assert isinstance(body["updated_at"], int) and body["updated_at"] > 1_600_000_000_000
        assert set(body["fee"]) == {"currency", "depositFee", "serviceFee", "withdrawalFee"}
        assert body["pay_amount"] == pay_amount and body["price_amount"] == 20
        assert body["order_id"] == "order-42" and body["order_description"] == "A licence"
        PaymentInfo.from_ipn_body(delivery.body)
    first, last = loads_exact(deliveries[0].body), loads_exact(deliveries[-1].body)
    assert first["actually_paid"] == 0
    if case == "success":
        assert last["actually_paid"] == pay_amount
        assert last["actually_paid_at_fiat"] == 20
        assert Decimal(0) < last["outcome_amount"] < pay_amount
    elif case == "partially_paid":
        assert Decimal(0) < last["actually_paid"] < pay_amount
    else:
        assert last["actually_paid"] == 0
    assert sandbox.payment(created["payment_id"])["payment_status"] == expected[-1]


def test_without_a_case_the_payment_stays_waiting(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    created = sandbox.create_payment(ipn_callback_url=ipn_receiver.url)
    ipn_receiver.wait_for(1)
    time.sleep(0.1)
    assert statuses(ipn_receiver.deliveries) == ["waiting"]
    assert sandbox.api.get(f"/v1/payment/{created['payment_id']}").json()["payment_status"] == (
        "waiting"
    )


def test_invoice_payments_carry_the_invoice_id_as_a_number(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    invoice = sandbox.create_invoice(ipn_callback_url=ipn_receiver.url, order_id="o-5")
    created = sandbox.api.post(
        "/v1/invoice-payment",
        json={"iid": invoice["id"], "pay_currency": "usdttrc20", "case": "success"},
    ).json()
    deliveries = ipn_receiver.wait_for(5)
    for delivery in deliveries:
        body = assert_signed(delivery, sandbox.ipn_secret)
        assert body["invoice_id"] == int(invoice["id"])
        assert body["payment_id"] == int(created["payment_id"])
        assert body["order_id"] == "o-5"


def test_the_api_call_returns_before_a_slow_receiver_answers(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    ipn_receiver.delay = 0.3
    started = time.monotonic()
    sandbox.create_payment(ipn_callback_url=ipn_receiver.url)
    assert time.monotonic() - started < 0.25
    ipn_receiver.wait_for(1)


def test_payments_without_a_callback_url_send_nothing(sandbox: SandboxHandle) -> None:
    created = sandbox.create_payment(case="success")
    sandbox.payment(created["payment_id"], wait_for_status="finished")
    assert sandbox.notifications(created["payment_id"]) == []


def test_unanswered_notifications_are_resent_until_2xx_and_every_attempt_is_kept(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    ipn_receiver.fail_next(2, status=503)
    created = sandbox.create_payment(ipn_callback_url=ipn_receiver.url)
    deliveries = ipn_receiver.wait_for(3)
    assert [d.answered for d in deliveries] == [503, 503, 200]
    assert len({d.body for d in deliveries}) == 1
    assert len({d.signature for d in deliveries}) == 1
    [record] = sandbox.notifications(created["payment_id"], settled=True)
    assert record["state"] == "delivered"
    assert [a["attempt"] for a in record["attempts"]] == [1, 2, 3]
    assert [a["status_code"] for a in record["attempts"]] == [503, 503, 200]
    assert record["attempts"][0]["response_body"] == '{"error":"receiver told to fail"}'
    assert record["attempts"][2]["response_body"] == '{"ok":true}'
    assert record["body"].encode() == deliveries[0].body
    assert record["signature"] == deliveries[0].signature
    assert record["url"] == ipn_receiver.url


def test_resends_stop_after_the_configured_attempts(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    ipn_receiver.fail_next(100)
    created = sandbox.create_payment(ipn_callback_url=ipn_receiver.url)
    [record] = sandbox.notifications(created["payment_id"], settled=True)
    assert record["state"] == "failed"
    assert len(record["attempts"]) == 1 + RESEND_ATTEMPTS
    assert len(ipn_receiver.deliveries) == 1 + RESEND_ATTEMPTS


def test_an_unreachable_receiver_is_recorded_as_an_error(sandbox: SandboxHandle) -> None:
    sandbox.settings(resend_attempts=0)
    created = sandbox.create_payment(ipn_callback_url="http://127.0.0.1:9/ipn")
    [record] = sandbox.notifications(created["payment_id"], settled=True)
    assert record["state"] == "failed"
    assert record["attempts"][0]["status_code"] is None
    assert record["attempts"][0]["error"]


def test_a_receiver_slower_than_the_timeout_counts_as_failed(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    sandbox.settings(ipn_timeout=0.05, resend_attempts=0)
    ipn_receiver.delay = 0.2
    created = sandbox.create_payment(ipn_callback_url=ipn_receiver.url)
    [record] = sandbox.notifications(created["payment_id"], settled=True)
    assert record["state"] == "failed"
    assert "Timeout" in record["attempts"][0]["error"]


def test_duplicates_send_the_exact_same_body_again(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    sandbox.settings(chaos={"duplicates": 1})
    created = sandbox.create_payment(ipn_callback_url=ipn_receiver.url, case="failed")
    records = sandbox.notifications(created["payment_id"], settled=True)
    deliveries = ipn_receiver.deliveries
    # Each status goes out twice, byte for byte. The two statuses are separate deliveries:
    # how their copies interleave on a busy machine is not what this test is about.
    assert sorted(statuses(deliveries)) == ["failed", "failed", "waiting", "waiting"]
    for status in ("waiting", "failed"):
        first, again = [d for d in deliveries if d.status == status]
        assert first.body == again.body
        assert first.signature == again.signature
    originals = {r["id"] for r in records if r["reason"] == "status"}
    duplicates = [r["duplicate_of"] for r in records if r["reason"] == "duplicate"]
    assert len(originals) == 2
    assert sorted(duplicates) == sorted(originals)


def test_per_payment_chaos_delays_its_notifications(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    created = sandbox.create_payment(ipn_callback_url=ipn_receiver.url)
    ipn_receiver.wait_for(1)
    payment_id = created["payment_id"]
    view = sandbox._ok(
        sandbox.control.patch(f"/sandbox/payments/{payment_id}/chaos", json={"delay": 0.15})
    )
    assert view["chaos"]["delay"] == 0.15 and view["effective_chaos"]["delay"] == 0.15
    started = time.monotonic()
    sandbox.set_status(payment_id, "confirming")
    deliveries = ipn_receiver.wait_for(2)
    assert deliveries[1].received_at - started >= 0.12
    # Other payments are not delayed.
    other = sandbox.create_payment(ipn_callback_url=ipn_receiver.url)
    assert sandbox.notifications(other["payment_id"], settled=True)[0]["state"] == "delivered"


def test_reorder_makes_later_statuses_overtake_earlier_ones(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    sandbox.settings(chaos={"reorder": True})
    created = sandbox.create_payment(ipn_callback_url=ipn_receiver.url, case="success")
    ipn_receiver.wait_for(5)
    # Each pair is swapped; the last one goes out alone once nothing follows it.
    assert statuses(ipn_receiver.deliveries) == [
        "confirming",
        "waiting",
        "sending",
        "confirmed",
        "finished",
    ]
    for delivery in ipn_receiver.deliveries:
        assert_signed(delivery, sandbox.ipn_secret)
    assert sandbox.payment(created["payment_id"])["payment_status"] == "finished"


def test_invoice_chaos_applies_to_its_payments(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    invoice = sandbox.create_invoice(ipn_callback_url=ipn_receiver.url)
    sandbox._ok(
        sandbox.control.patch(f"/sandbox/invoices/{invoice['id']}/chaos", json={"duplicates": 2})
    )
    sandbox.api.post("/v1/invoice-payment", json={"iid": invoice["id"], "pay_currency": "btc"})
    assert statuses(ipn_receiver.wait_for(3)) == ["waiting"] * 3


@pytest.mark.parametrize(
    ("status", "expected"),
    [("finished", PAID_SEQUENCE), ("partially_paid", ["partially_paid"])],
)
def test_repeated_deposit_is_a_new_payment_naming_its_parent(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver, status: str, expected: list[str]
) -> None:
    parent = sandbox.create_payment(ipn_callback_url=ipn_receiver.url, case="success")
    ipn_receiver.wait_for(5)
    child = sandbox._ok(
        sandbox.control.post(
            f"/sandbox/payments/{parent['payment_id']}/repeat-deposit", json={"status": status}
        )
    )
    assert child["payment_id"] != int(parent["payment_id"])
    assert child["parent_payment_id"] == int(parent["payment_id"])
    deliveries = ipn_receiver.wait_for(5 + len(expected))[5:]
    assert statuses(deliveries) == expected
    for delivery in deliveries:
        body = assert_signed(delivery, sandbox.ipn_secret)
        assert body["payment_id"] == child["payment_id"]
        assert body["parent_payment_id"] == int(parent["payment_id"])
        assert body["pay_address"] == parent["pay_address"]
        assert PaymentInfo.from_ipn_body(delivery.body).is_repeat_deposit
    status_answer = sandbox.api.get(f"/v1/payment/{child['payment_id']}").json()
    assert status_answer["parent_payment_id"] == int(parent["payment_id"])


def test_manual_resend_repeats_the_latest_notification_byte_for_byte(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    created = sandbox.create_payment(ipn_callback_url=ipn_receiver.url, case="expired")
    ipn_receiver.wait_for(2)
    resent = sandbox._ok(sandbox.control.post(f"/sandbox/payments/{created['payment_id']}/resend"))
    assert resent["reason"] == "resend" and resent["payment_status"] == "expired"
    deliveries = ipn_receiver.wait_for(3)
    assert deliveries[2].body == deliveries[1].body
    assert deliveries[2].signature == deliveries[1].signature
    again = sandbox._ok(sandbox.control.post(f"/sandbox/notifications/{resent['id']}/resend"))
    assert again["duplicate_of"] == resent["id"]
    assert ipn_receiver.wait_for(4)[3].body == deliveries[1].body


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        ("finished", PAID_SEQUENCE),
        ("overpaid", PAID_SEQUENCE),
        ("partially_paid", ["partially_paid"]),
        ("expired", ["expired"]),
        ("failed", ["failed"]),
        ("late_finished", ["expired", *PAID_SEQUENCE]),
        ("refunded", [*PAID_SEQUENCE, "refunded"]),
    ],
)
def test_control_api_drives_a_payment_to_any_outcome(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver, outcome: str, expected: list[str]
) -> None:
    created = sandbox.create_payment(price_amount=20, ipn_callback_url=ipn_receiver.url)
    ipn_receiver.wait_for(1)
    assert sandbox.drive(created["payment_id"], outcome) == expected
    sandbox.notifications(created["payment_id"], settled=True)
    deliveries = ipn_receiver.deliveries
    assert statuses(deliveries) == ["waiting", *expected]
    for delivery in deliveries:
        assert_signed(delivery, sandbox.ipn_secret)
    final = loads_exact(deliveries[-1].body)
    pay_amount = Decimal(created["pay_amount"]).quantize(Decimal("0.00000001"))
    if outcome == "overpaid":
        assert final["actually_paid"] > pay_amount
    elif outcome in ("finished", "late_finished", "refunded"):
        assert final["actually_paid"] == pay_amount
    view = sandbox.payment(created["payment_id"])
    assert [h["status"] for h in view["history"]] == ["waiting", *expected]


def test_driving_continues_from_the_current_status(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    created = sandbox.create_payment(ipn_callback_url=ipn_receiver.url)
    sandbox.set_status(created["payment_id"], "confirming", actually_paid="0.0001")
    assert sandbox.drive(created["payment_id"], "finished") == ["confirmed", "sending", "finished"]
    deliveries = ipn_receiver.wait_for(5)
    assert statuses(deliveries) == ["waiting", *PAID_SEQUENCE]
    assert loads_exact(deliveries[-1].body)["actually_paid"] == Decimal("0.0001")


def test_single_steps_may_go_in_any_order(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    created = sandbox.create_payment(ipn_callback_url=ipn_receiver.url)
    for status in ("finished", "waiting", "cancelled"):
        view = sandbox.set_status(created["payment_id"], status)
        assert view["payment_status"] == status
    assert statuses(ipn_receiver.wait_for(4)) == ["waiting", "finished", "waiting", "cancelled"]


def test_a_new_instruction_replaces_a_sequence_in_progress(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    sandbox.settings(step_delay=0.1)
    created = sandbox.create_payment(ipn_callback_url=ipn_receiver.url, case="success")
    ipn_receiver.wait_for(1)
    sandbox.set_status(created["payment_id"], "failed")
    time.sleep(0.2)
    assert statuses(ipn_receiver.deliveries) == ["waiting", "failed"]
    assert sandbox.payment(created["payment_id"])["in_progress"] is False


def test_amounts_as_strings_reach_the_ipn_and_stay_signed(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    sandbox.settings(amounts_as_strings=True)
    sandbox.create_payment(price_amount=20, ipn_callback_url=ipn_receiver.url)
    [delivery] = ipn_receiver.wait_for(1)
    body = assert_signed(delivery, sandbox.ipn_secret)
    assert body["pay_amount"] == "0.0003077" and body["price_amount"] == "20"
    assert isinstance(body["payment_id"], int)


def test_tiny_amounts_are_printed_as_javascript_does(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    created = sandbox.create_payment(price_amount=20, ipn_callback_url=ipn_receiver.url)
    sandbox.set_status(created["payment_id"], "partially_paid", actually_paid="0.0000005")
    delivery = ipn_receiver.wait_for(2)[1]
    assert b'"actually_paid":5e-7' in delivery.body
    assert_signed(delivery, sandbox.ipn_secret)

"""Applying notifications: one forward-only state machine, amounts checked, applied once."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cryptocheckout.catalogue.models import LicenceKey
from cryptocheckout.kit.jobs_models import Job, JobStatus
from cryptocheckout.orders.models import Order, OrderStatus
from cryptocheckout.payments.models import Payment, PaymentKind, PaymentStatus, StatusChange
from cryptocheckout.payments.state_machine import FULFIL_ORDER_JOB
from cryptocheckout.webhooks import processor
from cryptocheckout.webhooks.models import WebhookLog, WebhookLogStatus
from cryptocheckout.worker import Worker
from tests.support.ipn import ipn_payload, signed
from tests.support.shop import Paying, paying_order

URL = "/api/webhooks/nowpayments"
SECRET = "test-ipn-secret"
Sessions = async_sessionmaker[AsyncSession]


class Flow:
    def __init__(self, client: httpx.AsyncClient, sessionmaker: Sessions) -> None:
        self.client = client
        self.sessionmaker = sessionmaker
        self.worker = Worker(sessionmaker)

    async def send(self, paying: Paying, status: str, **overrides: Any) -> httpx.Response:
        fields: dict[str, Any] = {
            "order_id": str(paying.order_id),
            "price_amount": paying.price,
            "pay_amount": paying.pay_amount,
            "actually_paid": paying.pay_amount if status in ("finished", "partially_paid") else 0,
        }
        fields.update(overrides)
        payment_id = fields.pop("payment_id", paying.external_id)
        body, headers = signed(ipn_payload(payment_id, status, **fields), SECRET)
        response = await self.client.post(URL, content=body, headers=headers)
        assert response.status_code == 200, response.text
        return response

    async def drain(self) -> None:
        for _ in range(100):
            if not await self.worker.run_once():
                return
        raise AssertionError("the worker did not settle")

    async def state(self, paying: Paying) -> tuple[OrderStatus, PaymentStatus, Payment]:
        async with self.sessionmaker() as session:
            order = await session.get(Order, paying.order_id)
            payment = await session.get(Payment, paying.payment_id)
            assert order is not None and payment is not None
            return order.status, payment.status, payment

    async def logs(self) -> list[WebhookLog]:
        async with self.sessionmaker() as session:
            rows = await session.execute(select(WebhookLog).order_by(WebhookLog.created_at))
            return list(rows.scalars())

    async def count(self, model: Any, *where: Any) -> int:
        async with self.sessionmaker() as session:
            return int(
                (
                    await session.execute(select(func.count()).select_from(model).where(*where))
                ).scalar_one()
            )


@pytest.fixture
def flow(client: httpx.AsyncClient, sessionmaker: Sessions) -> Flow:
    return Flow(client, sessionmaker)


async def test_full_sequence_pays_then_fulfils_once(flow: Flow, sessionmaker: Sessions) -> None:
    paying = await paying_order(sessionmaker, quantity=2, keys=3)
    for status in ("waiting", "confirming", "confirmed", "sending"):
        await flow.send(paying, status)
        await flow.drain()
        order_status, payment_status, _ = await flow.state(paying)
        assert order_status in (
            OrderStatus.WAITING,
            OrderStatus.CONFIRMING,
        )  # never paid before finished
    await flow.send(paying, "finished")
    await flow.drain()
    order_status, payment_status, payment = await flow.state(paying)
    assert (order_status, payment_status) == (OrderStatus.FULFILLED, PaymentStatus.FINISHED)
    assert payment.actually_paid == Decimal("0.00045")
    assert payment.provider_status == "finished"
    assert not payment.needs_review
    assert await flow.count(LicenceKey, LicenceKey.order_id == paying.order_id) == 2
    assert await flow.count(Job, Job.kind == FULFIL_ORDER_JOB) == 1
    assert {log.status for log in await flow.logs()} == {WebhookLogStatus.PROCESSED}
    async with sessionmaker() as session:
        trail = (
            await session.execute(
                select(StatusChange.subject, StatusChange.to_status, StatusChange.cause)
                .where(StatusChange.order_id == paying.order_id)
                .order_by(StatusChange.created_at)
            )
        ).all()
    assert [(s, t) for s, t, _ in trail if s == "order"] == [
        ("order", "confirming"),
        ("order", "paid"),
        ("order", "fulfilled"),
    ]
    assert [t for s, t, _ in trail if s == "payment"] == ["confirming", "confirmed", "finished"]


async def test_stale_and_repeated_statuses_change_nothing(
    flow: Flow, sessionmaker: Sessions
) -> None:
    paying = await paying_order(sessionmaker)
    await flow.send(paying, "finished")
    await flow.drain()
    await flow.send(paying, "waiting")
    await flow.send(paying, "confirming")
    await flow.send(paying, "finished", updated_at=1)  # resent by hand: other bytes, same status
    await flow.drain()
    order_status, payment_status, _ = await flow.state(paying)
    assert (order_status, payment_status) == (OrderStatus.FULFILLED, PaymentStatus.FINISHED)
    statuses = [log.status for log in await flow.logs()]
    # Stale or repeated statuses are processed and change nothing (the contract keeps
    # `duplicate` for exact redeliveries, which are counted on their row instead).
    assert statuses == [WebhookLogStatus.PROCESSED] * 4
    assert await flow.count(Job, Job.kind == FULFIL_ORDER_JOB) == 1


async def test_late_payment_after_expiry_still_pays(flow: Flow, sessionmaker: Sessions) -> None:
    paying = await paying_order(sessionmaker)
    await flow.send(paying, "expired")
    await flow.drain()
    assert (await flow.state(paying))[:2] == (OrderStatus.EXPIRED, PaymentStatus.EXPIRED)
    await flow.send(paying, "failed")  # same rank as expired: no change
    await flow.drain()
    assert (await flow.state(paying))[:2] == (OrderStatus.EXPIRED, PaymentStatus.EXPIRED)
    await flow.send(paying, "finished")
    await flow.drain()
    assert (await flow.state(paying))[:2] == (OrderStatus.FULFILLED, PaymentStatus.FINISHED)


async def test_underpayment_then_completed_by_hand(flow: Flow, sessionmaker: Sessions) -> None:
    paying = await paying_order(sessionmaker)
    await flow.send(paying, "partially_paid", actually_paid=Decimal("0.0004"))
    await flow.drain()
    assert (await flow.state(paying))[:2] == (OrderStatus.UNDERPAID, PaymentStatus.UNDERPAID)
    await flow.send(paying, "finished", actually_paid=Decimal("0.0004"))  # still short
    await flow.drain()
    order_status, payment_status, _ = await flow.state(paying)
    assert (order_status, payment_status) == (OrderStatus.UNDERPAID, PaymentStatus.UNDERPAID)
    await flow.send(paying, "finished", actually_paid=Decimal("0.00045"))  # merchant fixed it
    await flow.drain()
    assert (await flow.state(paying))[:2] == (OrderStatus.FULFILLED, PaymentStatus.FINISHED)


async def test_short_finished_is_underpaid(flow: Flow, sessionmaker: Sessions) -> None:
    paying = await paying_order(sessionmaker)
    await flow.send(paying, "finished", actually_paid=Decimal("0.00044999"))
    await flow.drain()
    order_status, payment_status, payment = await flow.state(paying)
    assert (order_status, payment_status) == (OrderStatus.UNDERPAID, PaymentStatus.UNDERPAID)
    assert payment.needs_review and "underpaid" in (payment.review_reason or "")
    assert await flow.count(Job, Job.kind == FULFIL_ORDER_JOB) == 0


@pytest.mark.parametrize(
    ("percent", "expected"),
    [
        # 0.0000001 short of 0.00045 is 0.0222...% of it.
        ("0.05", OrderStatus.FULFILLED),
        ("0.0223", OrderStatus.FULFILLED),
        ("0.0222", OrderStatus.UNDERPAID),
        ("0", OrderStatus.UNDERPAID),
    ],
)
async def test_tolerance_is_a_percentage_of_the_pay_amount(
    flow: Flow, sessionmaker: Sessions, percent: str, expected: OrderStatus
) -> None:
    flow.worker.tolerance_percent = Decimal(percent)
    paying = await paying_order(sessionmaker)
    await flow.send(paying, "finished", actually_paid=Decimal("0.00044990"))
    await flow.drain()
    assert (await flow.state(paying))[0] is expected


async def test_overpaid_pays_and_is_flagged(flow: Flow, sessionmaker: Sessions) -> None:
    paying = await paying_order(sessionmaker)
    await flow.send(paying, "finished", actually_paid=Decimal("0.0009"))
    await flow.drain()
    order_status, payment_status, payment = await flow.state(paying)
    assert (order_status, payment_status) == (OrderStatus.FULFILLED, PaymentStatus.FINISHED)
    assert payment.needs_review and "overpaid" in (payment.review_reason or "")


@pytest.mark.parametrize(
    "overrides",
    [
        {"price_amount": Decimal("1.00")},
        {"price_currency": "eur"},
        {"pay_currency": "eth"},
    ],
    ids=["price", "price-currency", "pay-currency"],
)
async def test_price_or_currency_not_ours_is_held_for_staff(
    flow: Flow, sessionmaker: Sessions, overrides: dict[str, Any]
) -> None:
    paying = await paying_order(sessionmaker)
    await flow.send(paying, "finished", **overrides)
    await flow.drain()
    order_status, payment_status, payment = await flow.state(paying)
    assert (order_status, payment_status) == (OrderStatus.UNDERPAID, PaymentStatus.UNDERPAID)
    assert payment.needs_review and "conflict" in (payment.review_reason or "")
    assert await flow.count(Job, Job.kind == FULFIL_ORDER_JOB) == 0


async def test_refund_and_cancel_map_to_their_statuses(flow: Flow, sessionmaker: Sessions) -> None:
    refunded = await paying_order(sessionmaker, external_id="100")
    cancelled = await paying_order(sessionmaker, external_id="200")
    await flow.send(refunded, "finished")
    await flow.send(cancelled, "cancelled")
    await flow.drain()
    await flow.send(refunded, "refunded")
    await flow.drain()
    assert (await flow.state(refunded))[:2] == (OrderStatus.REFUNDED, PaymentStatus.REFUNDED)
    assert (await flow.state(cancelled))[:2] == (OrderStatus.FAILED, PaymentStatus.FAILED)


async def test_unknown_payments_fail_with_the_reason(flow: Flow, sessionmaker: Sessions) -> None:
    stranger = Paying(uuid.uuid4(), uuid.uuid4(), uuid.uuid4(), "999", Decimal(1), Decimal(1))
    await flow.send(stranger, "finished")
    payout = {"id": "5000000713", "batch_withdrawal_id": "5000000000", "status": "FINISHED"}
    body, headers = signed(payout, SECRET)
    await flow.client.post(URL, content=body, headers=headers)
    paying = await paying_order(sessionmaker)
    await flow.send(paying, "teleported")
    await flow.drain()
    logs = await flow.logs()
    assert [log.status for log in logs] == [WebhookLogStatus.FAILED] * 3
    assert "unknown payment 999" in (logs[0].error or "")
    assert "not a payment notification" in (logs[1].error or "")
    assert "unknown payment_status" in (logs[2].error or "")


async def test_our_order_with_an_unrecorded_payment_is_retried(
    flow: Flow, sessionmaker: Sessions
) -> None:
    # The payment is recorded; NOWPayments' answer is about to be (it notifies before).
    paying = await _unanswered(sessionmaker, age_seconds=1)
    await flow.send(paying, "waiting", payment_id="4242")
    await flow.drain()
    [log] = await flow.logs()
    assert log.status is WebhookLogStatus.PENDING and log.attempts == 1
    assert log.next_attempt_at is not None and "retrying" in (log.error or "")
    # the creating request records the provider's id, and the retry finds the payment
    async with sessionmaker() as session:
        payment = await session.get(Payment, paying.payment_id)
        assert payment is not None
        payment.external_id = "4242"
        log_row = await session.get(WebhookLog, log.id)
        assert log_row is not None
        log_row.next_attempt_at = None
        await session.commit()
    await flow.drain()
    [log] = await flow.logs()
    assert log.status is WebhookLogStatus.PROCESSED


async def test_retries_end_in_failed(
    flow: Flow, sessionmaker: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(processor, "RETRY_BASE", processor.timedelta(0))
    paying = await paying_order(sessionmaker, external_id=None)
    await flow.send(paying, "waiting", payment_id="4242")
    for _ in range(processor.MAX_ATTEMPTS + 2):
        await flow.drain()
    [log] = await flow.logs()
    assert log.status is WebhookLogStatus.FAILED
    assert log.attempts == processor.MAX_ATTEMPTS


async def test_invoice_payment_learns_its_payment_id(flow: Flow, sessionmaker: Sessions) -> None:
    paying = await paying_order(
        sessionmaker, external_id=None, invoice_id="6120000001", kind=PaymentKind.INVOICE
    )
    await flow.send(paying, "waiting", payment_id="5300000001", invoice_id=6120000001)
    await flow.send(paying, "finished", payment_id="5300000001", invoice_id=6120000001)
    await flow.drain()
    order_status, payment_status, payment = await flow.state(paying)
    assert payment.external_id == "5300000001"
    assert payment.pay_amount == Decimal("0.00045") and payment.pay_currency == "btc"
    assert (order_status, payment_status) == (OrderStatus.FULFILLED, PaymentStatus.FINISHED)


async def test_repeated_deposit_never_fulfils_twice(flow: Flow, sessionmaker: Sessions) -> None:
    paying = await paying_order(sessionmaker, keys=5)
    await flow.send(paying, "finished")
    await flow.drain()
    await flow.send(paying, "finished", payment_id="5077125099", parent_payment_id=5077125051)
    await flow.drain()
    assert (await flow.state(paying))[0] is OrderStatus.FULFILLED
    assert await flow.count(Job, Job.kind == FULFIL_ORDER_JOB) == 1
    assert await flow.count(LicenceKey, LicenceKey.order_id == paying.order_id) == 1
    async with sessionmaker() as session:
        child = (
            await session.execute(select(Payment).where(Payment.external_id == "5077125099"))
        ).scalar_one()
    assert child.order_id == paying.order_id
    assert child.parent_external_id == "5077125051"
    assert child.status is PaymentStatus.FINISHED
    assert child.needs_review and "already" in (child.review_reason or "")


async def test_repeated_deposit_can_complete_an_underpaid_order(
    flow: Flow, sessionmaker: Sessions
) -> None:
    paying = await paying_order(sessionmaker)
    await flow.send(paying, "partially_paid", actually_paid=Decimal("0.0002"))
    await flow.drain()
    await flow.send(
        paying,
        "partially_paid",
        payment_id="77",
        parent_payment_id=5077125051,
        actually_paid=Decimal("0.0001"),
    )
    await flow.drain()
    assert (await flow.state(paying))[0] is OrderStatus.UNDERPAID
    await flow.send(paying, "finished", payment_id="78", parent_payment_id=5077125051)
    await flow.drain()
    assert (await flow.state(paying))[0] is OrderStatus.FULFILLED
    assert await flow.count(Job, Job.kind == FULFIL_ORDER_JOB) == 1


async def test_replay_of_an_applied_notification_changes_nothing(
    flow: Flow, sessionmaker: Sessions
) -> None:
    paying = await paying_order(sessionmaker)
    await flow.send(paying, "finished")
    await flow.drain()
    [log] = await flow.logs()
    changes = await flow.count(StatusChange)
    replayed = await processor.replay(sessionmaker, log.id, Decimal(0))
    assert replayed is not None and replayed.status is WebhookLogStatus.PROCESSED
    assert await flow.count(StatusChange) == changes
    assert await flow.count(Job, Job.kind == FULFIL_ORDER_JOB) == 1


async def test_fulfilment_waits_for_stock(flow: Flow, sessionmaker: Sessions, admin: Any) -> None:
    paying = await paying_order(sessionmaker, quantity=2, keys=1)
    await flow.send(paying, "finished")
    await flow.drain()
    assert (await flow.state(paying))[0] is OrderStatus.PAID
    async with sessionmaker() as session:
        job = (await session.execute(select(Job).where(Job.kind == FULFIL_ORDER_JOB))).scalar_one()
    assert job.status is JobStatus.QUEUED and "OutOfStock" in (job.last_error or "")
    assert job.run_at > job.created_at  # backing off
    assert (
        await flow.count(LicenceKey, LicenceKey.order_id == paying.order_id) == 0
    )  # all or nothing
    added = await flow.client.post(
        f"/api/admin/products/{paying.product_id}/keys",
        json={"keys": ["NEW-1"]},
        headers=admin.headers,
    )
    assert added.status_code == 201  # adding keys makes the waiting job due at once
    await flow.drain()
    assert (await flow.state(paying))[0] is OrderStatus.FULFILLED
    assert await flow.count(LicenceKey, LicenceKey.order_id == paying.order_id) == 2


async def test_amounts_beyond_eight_decimals_still_pay(flow: Flow, sessionmaker: Sessions) -> None:
    paying = await paying_order(sessionmaker, price="12.50", pay_amount="0.0123")
    # What a JavaScript double can look like, and an 18-decimal token quote
    await flow.send(paying, "finished", actually_paid="0.012300000000000001", pay_amount="0.0123")
    await flow.drain()
    order_status, _, payment = await flow.state(paying)
    assert order_status is OrderStatus.FULFILLED
    assert payment.actually_paid == Decimal("0.0123")  # stored cut to the column's scale

    eth = await paying_order(sessionmaker, external_id="31", pay_amount="0.01234567")
    body, headers = signed(
        {
            **ipn_payload(
                31, "finished", order_id=str(eth.order_id), price_amount=eth.price, pay_amount="0"
            ),
            "pay_amount": "0.012345678912345678",
            "actually_paid": "0.012345678912345678",
        },
        SECRET,
    )
    assert (await flow.client.post(URL, content=body, headers=headers)).status_code == 200
    await flow.drain()
    assert (await flow.state(eth))[0] is OrderStatus.FULFILLED


async def test_another_coin_on_the_same_invoice_is_judged_by_its_own_quote(
    flow: Flow, sessionmaker: Sessions
) -> None:
    paying = await paying_order(
        sessionmaker, external_id=None, invoice_id="6120000002", kind=PaymentKind.INVOICE
    )
    await flow.send(paying, "expired", payment_id="111", invoice_id=6120000002)
    await flow.drain()
    await flow.send(
        paying,
        "finished",
        payment_id="222",
        invoice_id=6120000002,
        pay_currency="eth",
        pay_amount=Decimal("0.005"),
        actually_paid=Decimal("0.005"),
    )
    await flow.drain()
    assert (await flow.state(paying))[0] is OrderStatus.FULFILLED
    async with sessionmaker() as session:
        second = (
            await session.execute(select(Payment).where(Payment.external_id == "222"))
        ).scalar_one()
    assert second.status is PaymentStatus.FINISHED and second.pay_currency == "eth"


async def test_a_create_that_timed_out_is_adopted_by_its_notifications(
    flow: Flow, sessionmaker: Sessions
) -> None:
    paying = await paying_order(sessionmaker, external_id=None)
    async with sessionmaker() as session:
        payment = await session.get(Payment, paying.payment_id)
        assert payment is not None
        payment.status = PaymentStatus.FAILED
        payment.error_code = "OUTCOME_UNKNOWN"
        await session.commit()
    await flow.send(paying, "finished", payment_id="4343")
    await flow.drain()
    order_status, payment_status, payment = await flow.state(paying)
    assert (order_status, payment_status) == (OrderStatus.FULFILLED, PaymentStatus.FINISHED)
    assert payment.external_id == "4343"


async def test_an_invoice_notification_naming_another_order_is_refused(
    flow: Flow, sessionmaker: Sessions
) -> None:
    paying = await paying_order(
        sessionmaker, external_id=None, invoice_id="6120000003", kind=PaymentKind.INVOICE
    )
    await flow.send(
        paying, "finished", payment_id="333", invoice_id=6120000003, order_id=str(uuid.uuid4())
    )
    await flow.drain()
    [log] = await flow.logs()
    assert log.status is WebhookLogStatus.FAILED and "names order" in (log.error or "")
    order_status, _, payment = await flow.state(paying)
    assert order_status is OrderStatus.WAITING and payment.external_id is None


async def test_reconciliation_rounds_go_through_every_quiet_payment(
    sessionmaker: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datetime import timedelta

    from cryptocheckout.kit.clock import utcnow
    from cryptocheckout.kit.jobs_models import Job
    from cryptocheckout.payments import reconcile

    monkeypatch.setattr(reconcile, "MAX_POLLS_PER_ROUND", 2)
    payings = [await paying_order(sessionmaker, external_id=str(600 + n)) for n in range(3)]

    async def scan() -> set[str]:
        async with sessionmaker() as session:
            await reconcile.enqueue_stale_polls(session, quiet_for=timedelta(0))
            await session.commit()
            jobs = (
                await session.execute(select(Job.payload).where(Job.kind == "poll_payment"))
            ).scalars()
            return {payload["payment_id"] for payload in jobs}

    first = await scan()
    assert len(first) == 2
    async with sessionmaker() as session:  # what a poll does: touch the payments it read
        for paying in payings:
            if str(paying.payment_id) in first:
                payment = await session.get(Payment, paying.payment_id)
                assert payment is not None
                payment.polled_at = utcnow()
        await session.commit()
    second = await scan()
    assert {str(p.payment_id) for p in payings} <= second


async def test_order_events_once_per_order_and_type_whatever_arrives(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    """Each event is recorded with its status change, once, and each reaction sees it once."""
    from cryptocheckout.payments.events import ORDER_EVENT_JOB, OrderEvent

    seen: list[tuple[str, uuid.UUID]] = []

    async def react(_session: AsyncSession, event: OrderEvent) -> None:
        seen.append((event.type.value, event.order_id))

    flow = Flow(client, sessionmaker)
    flow.worker = Worker(sessionmaker, reactions=[react])
    paying = await paying_order(sessionmaker)
    for status in ("waiting", "finished", "finished", "waiting", "finished"):
        await flow.send(paying, status, actually_paid=paying.pay_amount)
    await flow.drain()
    for log in await flow.logs():  # staff replay every notification
        await processor.replay(sessionmaker, log.id, Decimal(0))
    await flow.drain()
    assert (await flow.state(paying))[0] is OrderStatus.FULFILLED
    assert sorted(seen) == [
        ("order.fulfilled", paying.order_id),
        ("order.paid", paying.order_id),
    ]
    assert await flow.count(Job, Job.kind == ORDER_EVENT_JOB) == 2


async def test_a_notification_naming_another_order_applies_nothing_and_flags(
    flow: Flow, sessionmaker: Sessions
) -> None:
    """Signed and naming our payment, but another order's id: nothing of it is applied."""
    paying = await paying_order(sessionmaker)
    other = await paying_order(sessionmaker, external_id="999")
    await flow.send(paying, "finished", order_id=str(other.order_id))
    await flow.drain()
    [log] = [log for log in await flow.logs() if log.external_id == paying.external_id]
    assert log.status is WebhookLogStatus.FAILED and "names order" in (log.error or "")
    order_status, payment_status, payment = await flow.state(paying)
    assert (order_status, payment_status) == (OrderStatus.WAITING, PaymentStatus.WAITING)
    assert payment.actually_paid is None
    assert payment.needs_review and str(other.order_id) in (payment.review_reason or "")
    assert (await flow.state(other))[0] is OrderStatus.WAITING


async def _unanswered(sessionmaker: Sessions, age_seconds: float) -> Paying:
    """An order whose payment was recorded `age_seconds` ago and never got its answer."""
    from datetime import timedelta

    from cryptocheckout.kit.clock import utcnow

    paying = await paying_order(sessionmaker, external_id=None)
    async with sessionmaker() as session:
        payment = await session.get(Payment, paying.payment_id)
        assert payment is not None
        payment.status = PaymentStatus.CREATED
        payment.created_at = utcnow() - timedelta(seconds=age_seconds)
        await session.commit()
    return paying


async def test_an_unknown_payment_while_its_create_may_run_is_retried(
    flow: Flow, sessionmaker: Sessions
) -> None:
    from cryptocheckout.payments.notifications import ADOPT_PAYMENT_JOB

    paying = await _unanswered(sessionmaker, age_seconds=1)
    await flow.send(paying, "waiting", payment_id="4545")
    assert await flow.worker.run_once()
    [log] = await flow.logs()
    assert log.status is WebhookLogStatus.PENDING and "retrying" in (log.error or "")
    assert await flow.count(Job, Job.kind == ADOPT_PAYMENT_JOB) == 0


async def test_an_unknown_payment_after_a_crash_is_confirmed_for_adoption(
    flow: Flow, sessionmaker: Sessions
) -> None:
    """No create of ours can still be running: the payment is looked up at NOWPayments."""
    from cryptocheckout.payments.notifications import ADOPT_PAYMENT_JOB

    paying = await _unanswered(sessionmaker, age_seconds=120)
    await flow.send(paying, "waiting", payment_id="4546")
    assert await flow.worker.run_once()
    [log] = await flow.logs()
    assert log.status is WebhookLogStatus.PENDING and "confirming" in (log.error or "")
    async with sessionmaker() as session:
        [job] = (
            (await session.execute(select(Job).where(Job.kind == ADOPT_PAYMENT_JOB)))
            .scalars()
            .all()
        )
    assert job.payload == {"external_id": "4546", "order_id": str(paying.order_id)}
    assert job.subject_id == paying.order_id


async def test_an_abandoned_payment_expiring_leaves_the_orders_new_payment_alone(
    flow: Flow, sessionmaker: Sessions
) -> None:
    """The customer switched coin: the old payment's expiry is not the order's."""
    paying = await paying_order(sessionmaker)
    async with sessionmaker() as session:
        old = await session.get(Payment, paying.payment_id)
        assert old is not None
        old.status = PaymentStatus.FAILED  # abandoned by the switch
        session.add(
            Payment(
                order_id=paying.order_id,
                kind=PaymentKind.PAYMENT,
                external_id="8080",
                status=PaymentStatus.WAITING,
                price_amount=paying.price,
                price_currency="USD",
                pay_currency="eth",
                pay_amount=Decimal("0.01"),
            )
        )
        await session.commit()
    await flow.send(paying, "expired")
    await flow.drain()
    assert (await flow.state(paying))[0] is OrderStatus.WAITING
    # Money that still arrives on the old one pays the order.
    await flow.send(paying, "finished")
    await flow.drain()
    assert (await flow.state(paying))[0] is OrderStatus.FULFILLED


async def test_an_invoice_whose_create_timed_out_is_adopted_by_its_notifications(
    flow: Flow, sessionmaker: Sessions
) -> None:
    """POST /v1/invoice timed out: no invoice id, no payment id; the customer paid on the
    invoice page anyway. Its signed notification names our order: the invoice is adopted."""
    paying = await paying_order(
        sessionmaker, external_id=None, invoice_id=None, kind=PaymentKind.INVOICE
    )
    async with sessionmaker() as session:
        payment = await session.get(Payment, paying.payment_id)
        assert payment is not None
        payment.status = PaymentStatus.FAILED
        payment.error_code = "OUTCOME_UNKNOWN"
        await session.commit()
    await flow.send(paying, "finished", payment_id="4747", invoice_id=6200001, pay_currency="btc")
    await flow.drain()
    order_status, payment_status, payment = await flow.state(paying)
    assert (order_status, payment_status) == (OrderStatus.FULFILLED, PaymentStatus.FINISHED)
    assert (payment.external_id, payment.invoice_id) == ("4747", "6200001")


async def test_an_invoice_whose_answer_never_arrived_is_a_candidate_for_adoption(
    sessionmaker: Sessions,
) -> None:
    """The confirmed adoption (`adopt_payment`) finds an unanswered invoice and accepts the
    coin the customer chose on NOWPayments' page."""
    from datetime import timedelta

    from cryptocheckout.kit.clock import utcnow
    from cryptocheckout.nowpayments.models import PaymentInfo
    from cryptocheckout.payments import repository
    from cryptocheckout.payments.reconcile import _same_quote
    from cryptocheckout.payments.service import ABANDON_AFTER

    paying = await paying_order(
        sessionmaker, external_id=None, invoice_id=None, kind=PaymentKind.INVOICE
    )
    async with sessionmaker() as session:
        payment = await session.get(Payment, paying.payment_id)
        assert payment is not None
        payment.status = PaymentStatus.CREATED
        payment.created_at = utcnow() - timedelta(seconds=120)
        await session.commit()
    async with sessionmaker() as session:
        found = await repository.unanswered_create(
            session, paying.order_id, before=utcnow() - ABANDON_AFTER
        )
    assert found is not None and found.id == paying.payment_id
    info = PaymentInfo.parse_mapping(
        {
            "payment_id": 4548,
            "invoice_id": 6200002,
            "payment_status": "finished",
            "order_id": str(paying.order_id),
            "price_amount": "12.5",
            "price_currency": "usd",
            "pay_currency": "ltc",
            "pay_amount": "0.2",
            "actually_paid": "0.2",
        }
    )
    assert _same_quote(found, info)

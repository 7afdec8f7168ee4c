"""Webhooks to the shop's own systems, received on loopback and verified with `standardwebhooks`.

Time is driven through the jobs' `run_at` (and the endpoint's clocks), never by sleeping.
"""

from __future__ import annotations

import itertools
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from standardwebhooks.webhooks import WebhookVerificationError

from cryptocheckout.config import Settings
from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.jobs_models import Job, JobStatus
from cryptocheckout.orders.models import Order, OrderStatus
from cryptocheckout.outbound import addresses, sender
from cryptocheckout.outbound import service as outbound
from cryptocheckout.outbound.models import WebhookDelivery, WebhookEndpoint
from cryptocheckout.outbound.sender import DeliveryLane
from cryptocheckout.webhooks import processor
from cryptocheckout.webhooks.models import WebhookLog
from cryptocheckout.worker import Worker
from tests.conftest import ADMIN_TOKEN
from tests.support.ipn import ipn_payload, signed
from tests.support.receiver import Receiver, receiver
from tests.support.shop import Paying, paying_order

Sessions = async_sessionmaker[AsyncSession]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ENDPOINTS = "/api/admin/webhook-endpoints"
IPN_SECRET = "test-ipn-secret"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The receiver listens on loopback, which only this setting allows.
    return settings.model_copy(update={"webhooks_allow_private": True})


@pytest.fixture(scope="module")
def hooks() -> Iterator[Receiver]:
    with receiver() as app:
        yield app


@pytest.fixture
def inbox(hooks: Receiver) -> Iterator[Receiver]:
    hooks.received.clear()
    hooks.answers.clear()
    hooks.hold.clear()
    yield hooks


class Shop:
    """The API, a worker with the outbound reaction, and its delivery lane, driven by hand."""

    def __init__(self, client: httpx.AsyncClient, sessionmaker: Sessions, lane: DeliveryLane):
        self.client = client
        self.sessionmaker = sessionmaker
        self.lane = lane
        self.worker = Worker(sessionmaker, reactions=[outbound.react], lanes=[lane])

    async def endpoint(self, url: str, events: list[str] | None = None) -> dict[str, Any]:
        response = await self.client.post(
            ENDPOINTS, json={"url": url, "events": events, "description": "erp"}, headers=ADMIN
        )
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def notify(self, paying: Paying, status: str) -> None:
        body, headers = signed(
            ipn_payload(
                paying.external_id or "1",
                status,
                order_id=str(paying.order_id),
                price_amount=paying.price,
                pay_amount=paying.pay_amount,
                actually_paid=paying.pay_amount if status == "finished" else 0,
            ),
            IPN_SECRET,
        )
        response = await self.client.post(
            "/api/webhooks/nowpayments", content=body, headers=headers
        )
        assert response.status_code == 200, response.text

    async def settle(self) -> None:
        """The worker's rounds, then the lane's, until nothing due is left."""
        for _ in range(50):
            if not await self.worker.run_once() + await self.lane.run_once():
                return
        raise AssertionError("the worker did not settle")

    async def pay(self) -> Paying:
        paying = await paying_order(self.sessionmaker, external_id=str(uuid.uuid4().int)[:12])
        await self.notify(paying, "finished")
        await self.settle()
        return paying

    async def deliveries(self, endpoint_id: str, **params: Any) -> dict[str, Any]:
        response = await self.client.get(
            f"{ENDPOINTS}/{endpoint_id}/deliveries", params=params, headers=ADMIN
        )
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    async def delivery_jobs(self) -> list[Job]:
        async with self.sessionmaker() as session:
            rows = await session.execute(
                select(Job).where(Job.kind == outbound.WEBHOOK_DELIVERY_JOB).order_by(Job.run_at)
            )
            return list(rows.scalars())

    async def make_due(self) -> None:
        """What waiting for the next retry would do: the queued deliveries are due now."""
        async with self.sessionmaker() as session:
            await session.execute(
                update(Job)
                .where(Job.kind == outbound.WEBHOOK_DELIVERY_JOB, Job.status == JobStatus.QUEUED)
                .values(run_at=utcnow())
            )
            await session.commit()


@pytest.fixture
async def shop(client: httpx.AsyncClient, sessionmaker: Sessions) -> AsyncIterator[Shop]:
    async with DeliveryLane(sessionmaker, allow_private=True) as lane:
        yield Shop(client, sessionmaker, lane)


async def test_every_event_arrives_once_per_order_and_type_signed_as_the_standard_says(
    shop: Shop, inbox: Receiver
) -> None:
    endpoint = await shop.endpoint(inbox.url("/all"))
    assert endpoint["secret"].startswith("whsec_") and endpoint["enabled"] is True
    paying = await paying_order(shop.sessionmaker)
    for status in ("waiting", "finished", "finished", "waiting", "finished"):
        await shop.notify(paying, status)
    # The payment core runs without the lane: its deliveries wait for the lane, untouched.
    for _ in range(20):
        if not await shop.worker.run_once():
            break
    assert {job.status for job in await shop.delivery_jobs()} == {JobStatus.QUEUED}
    assert inbox.received == []
    await shop.settle()
    async with shop.sessionmaker() as session:  # staff replay every notification
        logs = (await session.execute(select(WebhookLog.id))).scalars().all()
    for log_id in logs:
        await processor.replay(shop.sessionmaker, log_id, Decimal(0))
    await shop.settle()

    messages = [message.verify(endpoint["secret"]) for message in inbox.at("/all")]
    assert sorted(m["type"] for m in messages) == ["order.fulfilled", "order.paid"]
    assert len({r.webhook_id for r in inbox.received}) == 2
    for message in messages:
        assert set(message) == {"type", "timestamp", "data"}
        assert message["data"]["id"] == str(paying.order_id)
        assert message["data"]["total"] == "12.50"
        assert "access_token" not in message["data"]
    fulfilled = next(m for m in messages if m["type"] == "order.fulfilled")
    assert fulfilled["data"]["status"] == "fulfilled"
    received = inbox.received[0]
    assert received.headers["content-type"] == "application/json"
    assert received.headers["webhook-signature"].startswith("v1,")

    listed = await shop.deliveries(endpoint["id"])
    assert [d["status_code"] for d in listed["items"]] == [200, 200]
    assert {d["webhook_id"] for d in listed["items"]} == {r.webhook_id for r in inbox.received}
    assert listed["next_cursor"] is None
    assert all(d["error"] is None and d["created_at"] for d in listed["items"])


async def test_event_filters_and_disabled_endpoints(shop: Shop, inbox: Receiver) -> None:
    fulfilled_only = await shop.endpoint(inbox.url("/fulfilled"), ["order.fulfilled"])
    everything = await shop.endpoint(inbox.url("/everything"))
    disabled = await shop.endpoint(inbox.url("/disabled"))
    patched = await shop.client.patch(
        f"{ENDPOINTS}/{disabled['id']}", json={"enabled": False}, headers=ADMIN
    )
    assert patched.status_code == 200 and patched.json()["enabled"] is False
    await shop.pay()

    assert [r.verify(fulfilled_only["secret"])["type"] for r in inbox.at("/fulfilled")] == [
        "order.fulfilled"
    ]
    assert sorted(r.verify(everything["secret"])["type"] for r in inbox.at("/everything")) == [
        "order.fulfilled",
        "order.paid",
    ]
    assert inbox.at("/disabled") == []
    assert (await shop.deliveries(disabled["id"]))["items"] == []

    # A filter back to null takes every type again; unknown types are refused.
    reset = await shop.client.patch(
        f"{ENDPOINTS}/{fulfilled_only['id']}", json={"events": None}, headers=ADMIN
    )
    assert reset.status_code == 200 and reset.json()["events"] is None
    unknown = await shop.client.post(
        ENDPOINTS, json={"url": inbox.url("/x"), "events": ["order.created"]}, headers=ADMIN
    )
    assert unknown.status_code == 422


async def test_a_failing_endpoint_is_retried_on_schedule_with_the_same_webhook_id_across_a_restart(
    shop: Shop, inbox: Receiver, sessionmaker: Sessions
) -> None:
    endpoint = await shop.endpoint(inbox.url("/flaky"), ["order.paid"])
    inbox.answers["/flaky"] = [500, 503]
    before = utcnow()
    await shop.pay()
    [job] = await shop.delivery_jobs()
    assert job.status is JobStatus.QUEUED and job.attempts == 1
    # First retry within about 10 s: 5 s, +-10 %.
    assert before + timedelta(seconds=4.4) <= job.run_at <= utcnow() + timedelta(seconds=5.6)

    await shop.make_due()
    await shop.settle()
    [job] = await shop.delivery_jobs()
    assert job.status is JobStatus.QUEUED and job.attempts == 2
    wait = job.run_at - utcnow()
    assert timedelta(minutes=4) < wait <= timedelta(minutes=5.5)  # then minutes

    # The worker restarts: a new lane (another process) takes the job when it is due.
    async with DeliveryLane(sessionmaker, allow_private=True) as restarted:
        await shop.make_due()
        assert await restarted.run_once() == 1
    [job] = await shop.delivery_jobs()
    assert job.status is JobStatus.SUCCEEDED and job.attempts == 3

    arrivals = inbox.at("/flaky")
    assert len(arrivals) == 3 and len({r.webhook_id for r in arrivals}) == 1
    assert all(r.verify(endpoint["secret"])["type"] == "order.paid" for r in arrivals)
    first = await shop.deliveries(endpoint["id"], limit=2)
    rest = await shop.deliveries(endpoint["id"], limit=2, cursor=first["next_cursor"])
    attempts = first["items"] + rest["items"]
    assert [a["status_code"] for a in attempts] == [200, 503, 500]
    assert attempts[2]["response_excerpt"] == "answer 500"
    assert rest["next_cursor"] is None
    shown = (await shop.client.get(f"{ENDPOINTS}/{endpoint['id']}", headers=ADMIN)).json()
    assert shown["failing_since"] is None and "secret" not in shown


def test_the_retry_schedule_grows_for_about_three_days() -> None:
    waits = [outbound.retry_delay(n) for n in range(1, outbound.DELIVERY_ATTEMPTS)]
    assert waits[0] <= timedelta(seconds=10)
    assert timedelta(minutes=1) < waits[1] < timedelta(hours=1)
    assert waits[-1] > timedelta(hours=5)
    assert timedelta(days=2.5) < sum(waits, timedelta()) < timedelta(days=3.5)
    assert all(b >= a * 0.8 for a, b in itertools.pairwise(waits))


async def test_unreachable_endpoint_logs_the_error_and_ends_dead_after_the_schedule(
    shop: Shop, sessionmaker: Sessions
) -> None:
    endpoint = await shop.endpoint("http://127.0.0.1:9/nothing-listens", ["order.paid"])
    await shop.pay()
    for _ in range(outbound.DELIVERY_ATTEMPTS - 1):
        await shop.make_due()
        await shop.settle()
    [job] = await shop.delivery_jobs()
    assert job.status is JobStatus.DEAD and job.attempts == outbound.DELIVERY_ATTEMPTS
    attempts = (await shop.deliveries(endpoint["id"], limit=100))["items"]
    assert len(attempts) == outbound.DELIVERY_ATTEMPTS
    assert all(a["status_code"] is None and a["error"] for a in attempts)


async def test_redeliver_sends_the_same_event_again(shop: Shop, inbox: Receiver) -> None:
    endpoint = await shop.endpoint(inbox.url("/redo"), ["order.paid"])
    await shop.pay()
    [attempt] = (await shop.deliveries(endpoint["id"]))["items"]
    redo = await shop.client.post(
        f"{ENDPOINTS}/{endpoint['id']}/deliveries/{attempt['id']}/redeliver", headers=ADMIN
    )
    assert redo.status_code == 202, redo.text
    assert redo.json()["webhook_id"] == attempt["webhook_id"]
    await shop.settle()
    first, again = inbox.at("/redo")
    assert first.webhook_id == again.webhook_id == attempt["webhook_id"]
    assert first.verify(endpoint["secret"]) == again.verify(endpoint["secret"])
    assert len((await shop.deliveries(endpoint["id"]))["items"]) == 2

    missing = await shop.client.post(
        f"{ENDPOINTS}/{endpoint['id']}/deliveries/{uuid.uuid4()}/redeliver", headers=ADMIN
    )
    assert missing.status_code == 404
    await shop.client.patch(f"{ENDPOINTS}/{endpoint['id']}", json={"enabled": False}, headers=ADMIN)
    refused = await shop.client.post(
        f"{ENDPOINTS}/{endpoint['id']}/deliveries/{attempt['id']}/redeliver", headers=ADMIN
    )
    assert refused.status_code == 409


async def test_rotation_signs_with_both_secrets_for_the_overlap_then_the_new_one_only(
    shop: Shop, inbox: Receiver, sessionmaker: Sessions
) -> None:
    endpoint = await shop.endpoint(inbox.url("/rotate"), ["order.paid"])
    old = endpoint["secret"]
    rotated = await shop.client.post(f"{ENDPOINTS}/{endpoint['id']}/rotate-secret", headers=ADMIN)
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and new != old
    listed = (await shop.client.get(ENDPOINTS, headers=ADMIN)).json()["items"]
    assert "secret" not in json.dumps(listed)

    await shop.pay()
    [during] = inbox.at("/rotate")
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    assert during.verify(old) == during.verify(new)

    async with sessionmaker() as session:  # the 24 hours pass
        await session.execute(
            update(WebhookEndpoint).values(previous_secret_expires_at=utcnow() - timedelta(1))
        )
        await session.commit()
    [attempt] = (await shop.deliveries(endpoint["id"]))["items"]
    await shop.client.post(
        f"{ENDPOINTS}/{endpoint['id']}/deliveries/{attempt['id']}/redeliver", headers=ADMIN
    )
    await shop.settle()
    after = inbox.at("/rotate")[-1]
    assert after.verify(new)["type"] == "order.paid"
    with pytest.raises(WebhookVerificationError):
        after.verify(old)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0/hook",
        "http://224.0.0.1/hook",
        "http://100.64.0.1/hook",
        "ftp://93.184.216.34/hook",
        "http://user:pw@93.184.216.34/hook",
        "not a url",
    ],
)
async def test_private_and_non_http_urls_are_refused(
    client: httpx.AsyncClient, settings: Settings, url: str
) -> None:
    settings.webhooks_allow_private = False
    refused = await client.post(ENDPOINTS, json={"url": url}, headers=ADMIN)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "url" in refused.text


async def test_public_urls_pass_and_the_setting_allows_private_ones(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    settings.webhooks_allow_private = False
    public = await client.post(ENDPOINTS, json={"url": "https://93.184.216.34/hook"}, headers=ADMIN)
    assert public.status_code == 201, public.text
    moved = await client.patch(
        f"{ENDPOINTS}/{public.json()['id']}", json={"url": "http://10.0.0.1/"}, headers=ADMIN
    )
    assert moved.status_code == 422
    settings.webhooks_allow_private = True
    private = await client.post(ENDPOINTS, json={"url": "http://127.0.0.1:1/"}, headers=ADMIN)
    assert private.status_code == 201


async def test_the_address_is_checked_again_at_send_time(
    shop: Shop, inbox: Receiver, sessionmaker: Sessions
) -> None:
    endpoint = await shop.endpoint(inbox.url("/private"), ["order.paid"])
    shop.lane.allow_private = False  # the worker runs with the default setting
    await shop.pay()
    assert inbox.at("/private") == []
    [attempt] = (await shop.deliveries(endpoint["id"]))["items"]
    assert attempt["status_code"] is None and "non-public" in attempt["error"]


async def test_a_name_that_rebinds_to_loopback_after_the_check_never_reaches_it(
    sessionmaker: Sessions, shop: Shop, inbox: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the check sees a public address, any later lookup gets 127.0.0.1.

    `addresses.resolve_host` is our own resolver, the one the sender checks and connects
    with; substituting it plays a name server whose answer changes after the first lookup.
    The host is `localhost`, which a second lookup by the system (httpx's own) would also
    send to the loopback receiver. The public address refuses or times out; either way the
    attempt fails and nothing reaches loopback.
    """
    lookups: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["93.184.216.34"] if len(lookups) == 1 else ["127.0.0.1"]

    url = inbox.url("/rebind").replace("127.0.0.1", "localhost")
    endpoint = await shop.endpoint(url, ["order.paid"])
    monkeypatch.setattr(addresses, "resolve_host", rebinding)
    monkeypatch.setattr(sender, "TIMEOUT_SECONDS", 2.0)
    async with DeliveryLane(sessionmaker, allow_private=False) as lane:
        shop.lane = lane
        await shop.pay()
    assert inbox.at("/rebind") == []
    assert lookups == ["localhost"]  # resolved once, for the check and the connection
    [attempt] = (await shop.deliveries(endpoint["id"]))["items"]
    assert attempt["status_code"] is None and attempt["error"]


async def test_the_request_goes_to_the_resolved_address_under_its_own_name(
    shop: Shop, inbox: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With private addresses allowed the connection still goes to the resolved address.

    `addresses.resolve_host` (our own resolver) answers 127.0.0.1 for a name the system
    cannot resolve: the delivery arrives only if the sender connects to that answer, and the
    Host header keeps the name.
    """

    async def resolver(host: str, port: int) -> list[str]:
        assert host == "erp.shop.invalid"
        return ["127.0.0.1"]

    monkeypatch.setattr(addresses, "resolve_host", resolver)
    port = inbox.base_url.rsplit(":", 1)[1]
    endpoint = await shop.endpoint(f"http://erp.shop.invalid:{port}/named", ["order.paid"])
    paying = await shop.pay()
    [received] = inbox.at("/named")
    assert received.headers["host"] == f"erp.shop.invalid:{port}"
    message = received.verify(endpoint["secret"])
    assert message["type"] == "order.paid" and message["data"]["id"] == str(paying.order_id)


async def test_a_dead_endpoint_never_delays_a_healthy_one(
    sessionmaker: Sessions, shop: Shop, inbox: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dead endpoint holds its 4 slots with 12 more deliveries queued; another still gets its.

    The dead endpoint accepts and never answers (the timeout is raised so it cannot time out
    during the test): a lane that held claimed jobs waiting for the dead endpoint's slots
    would never send the healthy one.
    """
    import asyncio
    import threading

    from cryptocheckout.kit import jobs

    dead = await shop.endpoint(inbox.url("/dead"))
    healthy = await shop.endpoint(inbox.url("/ok"))
    inbox.hold["/dead"] = release = threading.Event()
    monkeypatch.setattr(sender, "TIMEOUT_SECONDS", 120.0)

    async def enqueue(endpoint: dict[str, Any], count: int, run_at: datetime) -> None:
        async with sessionmaker() as session:
            for _ in range(count):
                event_id = uuid.uuid4()
                await jobs.enqueue(
                    session,
                    outbound.WEBHOOK_DELIVERY_JOB,
                    {
                        "endpoint_id": endpoint["id"],
                        "event_id": str(event_id),
                        "order_id": str(uuid.uuid4()),
                        "type": "order.paid",
                        "webhook_id": outbound.webhook_id(event_id),
                        "body": json.dumps({"type": "order.paid", "data": {}}),
                    },
                    run_at=run_at,
                )
            await session.commit()

    async def wait_until(condition: Any) -> None:
        for _ in range(500):
            if condition():
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the condition never held")

    await enqueue(dead, 16, utcnow() - timedelta(minutes=1))
    lane = DeliveryLane(sessionmaker, allow_private=True, poll_interval=0.02)
    stop = asyncio.Event()
    running = asyncio.create_task(lane.run(stop))
    try:
        await wait_until(lambda: len(inbox.at("/dead")) == 4)
        await enqueue(healthy, 1, utcnow())
        await wait_until(lambda: len(inbox.at("/ok")) == 1)
        assert len(inbox.at("/dead")) == 4  # still 4 at a time for the dead endpoint
        statuses = [
            job.status
            for job in await shop.delivery_jobs()
            if job.payload["endpoint_id"] == dead["id"]
        ]
        assert statuses.count(JobStatus.RUNNING) == 4
        assert statuses.count(JobStatus.QUEUED) == 12
        inbox.at("/ok")[0].verify(healthy["secret"])
        release.set()  # the endpoint comes back: the rest go out
        await wait_until(lambda: len(inbox.at("/dead")) == 16)

        async def settled() -> bool:
            jobs_now = await shop.delivery_jobs()
            return all(job.status is JobStatus.SUCCEEDED for job in jobs_now)

        for _ in range(500):
            if await settled():
                break
            await asyncio.sleep(0.02)
        assert await settled()
        assert lane._in_flight == {}  # idle endpoints leave no per-endpoint state behind
    finally:
        release.set()
        stop.set()
        await running


async def test_an_endpoint_failing_for_five_days_is_disabled_and_gets_nothing_more(
    shop: Shop, inbox: Receiver, sessionmaker: Sessions
) -> None:
    endpoint = await shop.endpoint(inbox.url("/down"), ["order.paid"])
    inbox.answers["/down"] = [500] * 5
    await shop.pay()
    shown = (await shop.client.get(f"{ENDPOINTS}/{endpoint['id']}", headers=ADMIN)).json()
    assert shown["enabled"] is True and shown["failing_since"] is not None
    async with sessionmaker() as session:  # five days of failures pass
        await session.execute(
            update(WebhookEndpoint).values(failing_since=utcnow() - timedelta(days=5, minutes=1))
        )
        await session.commit()
    await shop.make_due()
    await shop.settle()
    shown = (await shop.client.get(f"{ENDPOINTS}/{endpoint['id']}", headers=ADMIN)).json()
    assert shown["enabled"] is False and "without a success" in shown["disabled_reason"]
    assert len(inbox.at("/down")) == 2

    await shop.make_due()  # its retry finds the endpoint disabled, and so do new events
    await shop.settle()
    await shop.pay()
    assert len(inbox.at("/down")) == 2
    assert [j.status for j in await shop.delivery_jobs()] == [JobStatus.SUCCEEDED]

    enabled = await shop.client.patch(
        f"{ENDPOINTS}/{endpoint['id']}", json={"enabled": True}, headers=ADMIN
    )
    assert enabled.json()["disabled_reason"] is None and enabled.json()["failing_since"] is None


async def test_a_delivery_whose_worker_died_is_sent_again_with_the_same_webhook_id(
    shop: Shop, inbox: Receiver, sessionmaker: Sessions
) -> None:
    from cryptocheckout.kit import jobs

    endpoint = await shop.endpoint(inbox.url("/crash"), ["order.paid"])
    paying = await paying_order(sessionmaker)
    await shop.notify(paying, "finished")
    for _ in range(20):
        if not await shop.worker.run_once():
            break
    # A worker claims the delivery, sends it, and dies before recording its completion.
    async with DeliveryLane(sessionmaker, allow_private=True) as doomed:
        [claimed] = await jobs.claim(sessionmaker, doomed.worker_id, kinds=doomed.kinds)
        async with sessionmaker() as session:
            await doomed.deliver(session, claimed.payload)
    assert len(inbox.at("/crash")) == 1
    assert await shop.lane.run_once() == 0  # its lease still holds
    async with sessionmaker() as session:  # the lease runs out
        await session.execute(
            update(Job)
            .where(Job.id == claimed.id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()
    assert await shop.lane.run_once() == 1
    first, second = inbox.at("/crash")
    assert first.webhook_id == second.webhook_id
    assert first.verify(endpoint["secret"]) == second.verify(endpoint["secret"])
    [job] = await shop.delivery_jobs()
    assert job.status is JobStatus.SUCCEEDED


async def test_deleting_an_endpoint_drops_its_log_and_its_pending_deliveries(
    shop: Shop, inbox: Receiver, sessionmaker: Sessions
) -> None:
    endpoint = await shop.endpoint(inbox.url("/gone"))
    inbox.answers["/gone"] = [500, 500]
    await shop.pay()
    deleted = await shop.client.delete(f"{ENDPOINTS}/{endpoint['id']}", headers=ADMIN)
    assert deleted.status_code == 204
    assert (
        await shop.client.get(f"{ENDPOINTS}/{endpoint['id']}", headers=ADMIN)
    ).status_code == 404
    await shop.make_due()
    await shop.settle()
    assert len(inbox.at("/gone")) == 2
    assert {j.status for j in await shop.delivery_jobs()} == {JobStatus.SUCCEEDED}
    async with sessionmaker() as session:
        assert (await session.execute(select(WebhookDelivery))).first() is None


async def test_attempts_older_than_30_days_are_pruned(shop: Shop, sessionmaker: Sessions) -> None:
    endpoint = await shop.endpoint("http://127.0.0.1:9/", ["order.paid"])
    async with sessionmaker() as session:
        for age in (31, 29):
            session.add(
                WebhookDelivery(
                    endpoint_id=uuid.UUID(endpoint["id"]),
                    event_id=uuid.uuid4(),
                    event_type="order.paid",
                    webhook_id="msg_x",
                    error="refused",
                    created_at=utcnow() - timedelta(days=age),
                )
            )
        await session.commit()
    await shop.lane._prune()
    assert len((await shop.deliveries(endpoint["id"]))["items"]) == 1


async def test_the_event_is_the_order_without_its_token(shop: Shop, inbox: Receiver) -> None:
    endpoint = await shop.endpoint(inbox.url("/snapshot"), ["order.paid"])
    paying = await shop.pay()
    [message] = [r.verify(endpoint["secret"]) for r in inbox.at("/snapshot")]
    async with shop.sessionmaker() as session:
        order = await session.get(Order, paying.order_id)
        assert order is not None and order.status is OrderStatus.FULFILLED
    data = message["data"]
    assert data["email"] == "buyer@example.com" and data["currency"] == "USD"
    assert data["items"][0]["quantity"] == 1 and data["payment"]["status"] == "finished"
    assert order.access_token not in json.dumps(message)


async def test_a_hanging_endpoint_never_holds_up_payments(
    shop: Shop, inbox: Receiver, sessionmaker: Sessions
) -> None:
    """The running worker: a delivery hangs in its lane while the next payment goes through."""
    import asyncio
    import threading

    await shop.endpoint(inbox.url("/hang"), ["order.paid"])
    inbox.hold["/hang"] = release = threading.Event()
    worker = Worker(
        sessionmaker,
        poll_interval=0.02,
        reactions=[outbound.react],
        lanes=[DeliveryLane(sessionmaker, allow_private=True, poll_interval=0.02)],
    )
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))

    async def status(paying: Paying) -> OrderStatus:
        async with sessionmaker() as session:
            order = await session.get(Order, paying.order_id)
            assert order is not None
            return order.status

    async def wait_until(condition: Any) -> None:
        for _ in range(1500):
            if await condition():
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the condition never held")

    try:
        first = await paying_order(sessionmaker, external_id="7001")
        await shop.notify(first, "finished")

        async def hanging() -> bool:
            return len(inbox.at("/hang")) == 1

        await wait_until(hanging)
        second = await paying_order(sessionmaker, external_id="7002")
        await shop.notify(second, "finished")

        async def fulfilled() -> bool:
            return await status(second) is OrderStatus.FULFILLED

        await wait_until(fulfilled)
        async with sessionmaker() as session:  # the first delivery is still in flight
            assert (await session.execute(select(WebhookDelivery))).first() is None
    finally:
        release.set()
        stop.set()
        await running


@pytest.mark.slow
@pytest.mark.parametrize("dialect", ["postgresql"], indirect=True)
async def test_a_worker_killed_mid_delivery_the_event_still_arrives_with_the_same_id(
    shop: Shop, inbox: Receiver, sessionmaker: Sessions, database_url: str
) -> None:
    """A real worker process is killed (SIGKILL) while its request is in flight."""
    import asyncio
    import os
    import signal
    import subprocess
    import sys
    import threading

    endpoint = await shop.endpoint(inbox.url("/killed"), ["order.paid"])
    inbox.hold["/killed"] = release = threading.Event()
    paying = await paying_order(sessionmaker, external_id="8001")
    await shop.notify(paying, "finished")
    for _ in range(20):  # the payment core only: the delivery waits in the queue
        if not await shop.worker.run_once():
            break
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "CRYPTOCHECKOUT_MODE": "test",
        "NOWPAYMENTS_API_KEY": "k",
        "NOWPAYMENTS_IPN_SECRET": IPN_SECRET,
        "WORKER_POLL_SECONDS": "0.02",
        "WEBHOOKS_ALLOW_PRIVATE": "true",
    }

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "cryptocheckout", "worker"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def wait_until(condition: Any) -> None:
        for _ in range(3000):
            if await condition():
                return
            await asyncio.sleep(0.02)
        raise AssertionError("the condition never held")

    async def arrived(count: int) -> bool:
        return len(inbox.at("/killed")) >= count

    async def delivered() -> bool:
        return [j.status for j in await shop.delivery_jobs()] == [JobStatus.SUCCEEDED]

    doomed = start()
    try:
        await wait_until(lambda: arrived(1))
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(timeout=10)
    finally:
        if doomed.poll() is None:
            doomed.kill()
        release.set()
    [job] = await shop.delivery_jobs()
    assert job.status is JobStatus.RUNNING
    async with sessionmaker() as session:  # its lease runs out (2 minutes, not waited for)
        await session.execute(
            update(Job).where(Job.id == job.id).values(lease_expires_at=utcnow() - timedelta(1))
        )
        await session.commit()
    survivor = start()
    try:
        await wait_until(delivered)
    finally:
        survivor.send_signal(signal.SIGTERM)
        survivor.wait(timeout=15)
    first, second = inbox.at("/killed")
    assert first.webhook_id == second.webhook_id
    assert first.verify(endpoint["secret"]) == second.verify(endpoint["secret"])
    assert [d["status_code"] for d in (await shop.deliveries(endpoint["id"]))["items"]] == [200]

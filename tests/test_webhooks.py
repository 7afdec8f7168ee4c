"""The IPN endpoint: verified, stored durably, acknowledged; nothing applied on the way."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cryptocheckout.app import create_app
from cryptocheckout.config import Settings
from cryptocheckout.nowpayments import signature
from cryptocheckout.webhooks import ingest, router
from cryptocheckout.webhooks.models import RejectedWebhook, WebhookLog, WebhookLogStatus
from tests.support.ipn import ipn_payload, signed
from tests.support.servers import free_port

URL = "/api/webhooks/nowpayments"
SECRET = "test-ipn-secret"
Sessions = async_sessionmaker[AsyncSession]


def _payload(status: str = "waiting", payment_id: int = 5077125051) -> dict[str, object]:
    return ipn_payload(
        payment_id, status, order_id="not-ours", price_amount="12.5", pay_amount="0.00045"
    )


async def _logs(sessionmaker: Sessions) -> list[WebhookLog]:
    async with sessionmaker() as session:
        return list(
            (await session.execute(select(WebhookLog).order_by(WebhookLog.created_at))).scalars()
        )


async def _rejected(sessionmaker: Sessions) -> list[RejectedWebhook]:
    async with sessionmaker() as session:
        return list((await session.execute(select(RejectedWebhook))).scalars())


async def test_signed_notification_is_stored_pending_before_200(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    body, headers = signed(_payload(), SECRET)
    response = await client.post(URL, content=body, headers=headers)
    assert response.status_code == 200
    assert response.json() == {"status": "stored"}
    [log] = await _logs(sessionmaker)  # committed: visible from another session at once
    assert log.status is WebhookLogStatus.PENDING
    assert log.external_id == "5077125051"
    assert log.provider_status == "waiting"
    assert log.raw_body == body.decode()
    assert log.raw_payload["fee"]["currency"] == "btc"
    assert log.deliveries == 1


async def test_redelivery_is_counted_not_stored_twice(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    body, headers = signed(_payload(), SECRET)
    assert (await client.post(URL, content=body, headers=headers)).json() == {"status": "stored"}
    assert (await client.post(URL, content=body, headers=headers)).json() == {"status": "duplicate"}
    # a proxy that re-spaces and re-orders the body: same content, same fingerprint
    respaced = json.dumps(json.loads(body), indent=2, sort_keys=False).encode()
    again = await client.post(URL, content=respaced, headers=headers)
    assert again.status_code == 200 and again.json() == {"status": "duplicate"}
    [log] = await _logs(sessionmaker)
    assert log.deliveries == 3


async def test_one_payment_sends_several_notifications(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    for status in ("waiting", "confirming", "finished"):
        body, headers = signed(_payload(status), SECRET)
        assert (await client.post(URL, content=body, headers=headers)).status_code == 200
    logs = await _logs(sessionmaker)
    assert [log.provider_status for log in logs] == ["waiting", "confirming", "finished"]
    assert {log.external_id for log in logs} == {"5077125051"}


async def test_concurrent_deliveries_share_commits(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    bodies = [signed(_payload(payment_id=6000000000 + i), SECRET) for i in range(40)]
    before = ingest.BATCHES.value()
    responses = await asyncio.gather(
        *(client.post(URL, content=b, headers=h) for b, h in bodies + bodies[:10])
    )
    assert all(r.status_code == 200 for r in responses)
    assert sorted(r.json()["status"] for r in responses).count("stored") == 40
    logs = await _logs(sessionmaker)
    assert len(logs) == 40
    assert sum(log.deliveries for log in logs) == 50
    assert ingest.BATCHES.value() - before < 50  # grouped: fewer commits than requests


async def test_bad_signatures_are_401_and_logged(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    body, headers = signed(_payload(), SECRET)
    wrong_secret = signed(_payload(), "another-secret")[1]
    tampered = body.replace(b'"payment_status":"waiting"', b'"payment_status":"finished"')
    for content, hdrs in [
        (body, {"Content-Type": "application/json"}),
        (body, {**headers, "x-nowpayments-sig": ""}),
        (body, wrong_secret),
        (tampered, headers),
        (body, {"X-NOWPAYMENTS-SIG": "ab" * 64}),
        (b"not json at all", headers),
    ]:
        response = await client.post(URL, content=content, headers=hdrs)
        assert response.status_code == 401, response.text
        assert response.headers["content-type"] == "application/problem+json"
    # header name in any case is accepted when the signature is right
    upper = {"X-NowPayments-Sig": headers["x-nowpayments-sig"]}
    assert (await client.post(URL, content=body, headers=upper)).status_code == 200
    for _ in range(50):
        if len(await _rejected(sessionmaker)) == 6:
            break
        await asyncio.sleep(0.02)
    rejected = await _rejected(sessionmaker)
    assert (
        sorted(r.reason for r in rejected) == ["invalid signature"] * 4 + ["missing signature"] * 2
    )
    assert len(await _logs(sessionmaker)) == 1


async def test_signed_body_that_is_not_an_object_is_400(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    for payload in ([1, 2], "text", 12):
        body, headers = signed(payload, SECRET)  # type: ignore[arg-type]
        response = await client.post(URL, content=body, headers=headers)
        assert response.status_code == 400, payload
    assert await _logs(sessionmaker) == []


async def test_oversized_notification_is_413(client: httpx.AsyncClient) -> None:
    payload = {**_payload(), "order_description": "x" * (65 * 1024)}
    body, headers = signed(payload, SECRET)
    assert (await client.post(URL, content=body, headers=headers)).status_code == 413


async def test_odd_but_signed_content_is_stored(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    payload = {**_payload(), "order_description": "nul\u0000 and \ud800 lone", "big": 1e308 * 10}
    body, headers = signed(payload, SECRET)
    response = await client.post(URL, content=body, headers=headers)
    assert response.status_code == 200
    [log] = await _logs(sessionmaker)
    assert log.raw_body == body.decode()


async def test_payout_and_unknown_notifications_are_stored_too(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    payout = {
        "id": "5000000713",
        "batch_withdrawal_id": "5000000000",
        "status": "FINISHED",
        "amount": 0.5,
    }
    body, headers = signed(payout, SECRET)
    assert (await client.post(URL, content=body, headers=headers)).status_code == 200
    [log] = await _logs(sessionmaker)
    assert log.external_id is None


async def test_503_when_the_database_is_down(settings: Settings) -> None:
    dead = settings.model_copy(
        update={"database_url": f"postgresql://postgres@127.0.0.1:{free_port()}/x"}
    )
    app = create_app(dead)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shop.test") as c,
    ):
        body, headers = signed(_payload(), SECRET)
        response = await c.post(URL, content=body, headers=headers)
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"


async def test_rejected_log_is_bounded(
    client: httpx.AsyncClient, sessionmaker: Sessions, monkeypatch: object
) -> None:
    import pytest

    mp = pytest.MonkeyPatch()
    mp.setattr(ingest.rows, "REJECTED_LOG_LIMIT", 20)
    try:
        for i in range(60):
            await client.post(
                URL, content=b'{"n": %d}' % i, headers={"x-nowpayments-sig": "00" * 64}
            )
        # Refused deliveries are written in the background, in order of arrival, by the same
        # writer(s) as notifications: once a signed notification sent after them is stored on
        # every writer, they are all written too, and no write is left to race the teardown.
        stored = await asyncio.gather(
            *(
                client.post(URL, content=body, headers=headers)
                for body, headers in (
                    signed(_payload(payment_id=9900 + n), SECRET) for n in range(8)
                )
            )
        )
        assert [r.status_code for r in stored] == [200] * 8
        async with sessionmaker() as session:
            count = (
                await session.execute(select(func.count()).select_from(RejectedWebhook))
            ).scalar_one()
        # Pruned every REJECTED_LOG_LIMIT // 10 rows: at most that many over the limit.
        assert 0 < count <= 22
    finally:
        mp.undo()


async def test_an_unstorable_id_does_not_fail_the_others(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    odd = {**_payload(), "payment_id": "a\u0000b\ud800"}
    bodies = [signed(odd, SECRET)] + [
        signed(_payload(payment_id=9100 + i), SECRET) for i in range(5)
    ]
    responses = await asyncio.gather(*(client.post(URL, content=b, headers=h) for b, h in bodies))
    assert [r.status_code for r in responses] == [200] * 6
    assert len(await _logs(sessionmaker)) == 6


async def test_absurdly_nested_signed_body_is_400(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    import hashlib
    import hmac

    for depth in (40, 700, 950, 990, 3000):  # around where Python's recursion gives up
        body = b'{"payment_id":1,"x":' + b'{"a":' * depth + b"1" + b"}" * depth + b"}"
        signature = hmac.new(SECRET.encode(), body, hashlib.sha512).hexdigest()
        response = await client.post(URL, content=body, headers={"x-nowpayments-sig": signature})
        assert response.status_code == 400, depth
    assert await _logs(sessionmaker) == []


async def test_the_fastapi_route_behaves_like_the_fast_path(
    settings: Settings, engine: object, sessionmaker: Sessions
) -> None:
    """The route documents the endpoint in OpenAPI; without the fast path it serves it too."""
    from cryptocheckout.webhooks.router import IpnFastPath

    app = create_app(settings, engine=engine)  # type: ignore[arg-type]
    app.user_middleware = [m for m in app.user_middleware if m.cls is not IpnFastPath]
    assert app.middleware_stack is None  # built at the first request, without the fast path
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as c:
            body, headers = signed(_payload(), SECRET)
            assert (await c.post(URL, content=body, headers=headers)).json() == {"status": "stored"}
            assert (await c.post(URL, content=body, headers=headers)).json() == {
                "status": "duplicate"
            }
            assert (await c.post(URL, content=body)).status_code == 401
            spec = (await c.get("/openapi.json")).json()
    assert "401" in spec["paths"][URL]["post"]["responses"]
    assert len(await _logs(sessionmaker)) == 1


async def test_trailing_slash_is_served_too(client: httpx.AsyncClient) -> None:
    body, headers = signed(_payload(), SECRET)
    response = await client.post(URL + "/", content=body, headers=headers)
    assert response.status_code == 200 and response.json() == {"status": "stored"}


async def test_a_long_proxy_address_on_a_rejected_delivery_does_not_fail_the_batch(
    engine: object, sessionmaker: Sessions
) -> None:
    from cryptocheckout.kit.clock import utcnow

    store = ingest.NotificationStore(engine)  # type: ignore[arg-type]
    await store.start()
    try:
        store.reject(ingest.Rejected("invalid signature", "x" * 300, "0" * 64, 10, utcnow()))
        body, _ = signed(_payload(payment_id=777), SECRET)
        assert await store.store(ingest.incoming(body, json.loads(body))) is True
    finally:
        await store.stop()
    assert len(await _logs(sessionmaker)) == 1
    assert [r.remote_addr for r in await _rejected(sessionmaker)] == ["x" * 64]


# --- forged bodies must not cost the server more than the raw-bytes HMAC -------------------

# The drill's body: 55 KB of nested arrays with a signature that matches nothing.
FORGED = ('{"junk": [' + ",".join(['[[[[[{"a":[1]}]]]]]'] * 3000) + '], "payment_id": 1}').encode()
FORGED_HEADERS = {"x-nowpayments-sig": "f" * 128, "Content-Type": "application/json"}


def _canonical_checks(outcome: str) -> float:
    return router.CANONICAL_CHECKS.value(outcome=outcome)


async def test_a_large_forged_body_is_401_without_the_canonical_forms(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    assert len(FORGED) > signature.MAX_CANONICAL_BYTES
    tried, skipped = _canonical_checks("tried"), _canonical_checks("skipped_size")
    for _ in range(3):
        response = await client.post(URL, content=FORGED, headers=FORGED_HEADERS)
        assert response.status_code == 401
    assert _canonical_checks("tried") == tried
    assert _canonical_checks("skipped_size") == skipped + 3
    assert await _logs(sessionmaker) == []


async def test_a_small_forged_body_with_many_values_is_401_without_the_canonical_forms(
    client: httpx.AsyncClient,
) -> None:
    body = json.dumps({"junk": [[1, [2]]] * 800}, separators=(",", ":")).encode()
    assert len(body) <= signature.MAX_CANONICAL_BYTES
    tried, skipped = _canonical_checks("tried"), _canonical_checks("skipped_values")
    response = await client.post(URL, content=body, headers=FORGED_HEADERS)
    assert response.status_code == 401
    assert _canonical_checks("tried") == tried
    assert _canonical_checks("skipped_values") == skipped + 1


async def test_a_real_body_verifies_in_all_three_forms(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    payload = {**_payload(payment_id=8100), "payment_extra_ids": [{"id": 1}, {"id": 2}]}
    canonical_body, headers = signed(payload, SECRET)
    key = SECRET.encode()
    # 1. raw bytes: the body as delivered is what was signed
    assert (await client.post(URL, content=canonical_body, headers=headers)).status_code == 200
    # 2. canonical: a proxy re-spaced and re-ordered the body
    tried = _canonical_checks("tried")
    reordered = json.dumps(dict(reversed(list(json.loads(canonical_body).items()))), indent=1)
    response = await client.post(URL, content=reordered.encode(), headers=headers)
    assert response.status_code == 200 and response.json() == {"status": "duplicate"}
    # 3. arrays as objects: the documented Node helper's form
    other = {**payload, "payment_id": 8101}
    helper_form = signature.canonical_json(other, arrays_as_objects=True).encode()
    helper_sig = hmac.new(key, helper_form, hashlib.sha512).hexdigest()
    response = await client.post(
        URL, content=signature.canonical_ipn_body(other), headers={"x-nowpayments-sig": helper_sig}
    )
    assert response.status_code == 200 and response.json() == {"status": "stored"}
    assert _canonical_checks("tried") == tried + 2
    assert len(await _logs(sessionmaker)) == 2


async def test_unsigned_bodies_past_the_time_budget_are_503_without_the_check(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:

    monkeypatch.setattr(router, "CANONICAL_BURST_SECONDS", 0.0)
    tried = _canonical_checks("tried")
    body, headers = signed(_payload(), SECRET)
    response = await client.post(URL, content=body, headers=FORGED_HEADERS)
    assert response.status_code == 503 and response.headers["retry-after"] == "5"
    assert _canonical_checks("tried") == tried
    # the raw-bytes check needs no budget: signed notifications still go through
    assert (await client.post(URL, content=body, headers=headers)).json() == {"status": "stored"}


async def test_stopping_the_store_finishes_what_was_queued_before(
    engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """A writer cancelled inside its transaction could leave SQLite's write lock held (the
    suite's teardown then failed with "database is locked"): stopping lets it finish."""
    from sqlalchemy import func, select

    from cryptocheckout.kit.clock import utcnow
    from cryptocheckout.webhooks.ingest import NotificationStore, Rejected
    from cryptocheckout.webhooks.models import RejectedWebhook

    store = NotificationStore(engine)
    await store.start()
    for _ in range(3):
        store.reject(Rejected("invalid signature", None, "0" * 64, 1, utcnow()))
    await store.stop()  # at once, as the app's shutdown does
    async with sessionmaker() as session:
        stored = await session.scalar(select(func.count()).select_from(RejectedWebhook))
    assert stored == 3

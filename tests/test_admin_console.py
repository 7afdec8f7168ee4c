"""The admin console over HTTP: sign-in, sessions, CSRF, headers, and each action."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from cryptocheckout.admin.models import AdminAction, AdminSession
from cryptocheckout.app import create_app
from cryptocheckout.catalogue.models import LicenceKey
from cryptocheckout.config import Settings
from cryptocheckout.kit import jobs
from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.jobs_models import Job, JobStatus
from cryptocheckout.orders.models import Order
from cryptocheckout.outbound import service as outbound
from cryptocheckout.outbound.models import WebhookDelivery, WebhookEndpoint
from cryptocheckout.webhooks.models import WebhookLog
from tests.conftest import ADMIN_TOKEN, Admin
from tests.support.shop import paying_order
from tests.test_admin_orders_api import drain, notify, underpaid_order

Sessions = async_sessionmaker[AsyncSession]
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


async def sign_in(client: httpx.AsyncClient, token: str = ADMIN_TOKEN) -> str:
    """Signs the client in; returns the CSRF token of its session."""
    response = await client.post("/admin/login", data={"token": token})
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/admin"
    home = await client.get("/admin")
    assert home.status_code == 200
    match = CSRF.search(home.text)
    assert match is not None
    return match.group(1)


@asynccontextmanager
async def other_app(engine: AsyncEngine, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, engine=engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as c:
            yield c


@pytest.mark.parametrize(
    "path",
    [
        "/admin",
        "/admin/payments",
        "/admin/payments/00000000-0000-4000-8000-000000000000",
        "/admin/webhook-logs",
        "/admin/rejected-webhooks",
        "/admin/jobs",
        "/admin/products",
        "/admin/orders",
        "/admin/webhooks",
        "/admin/anything/else",
    ],
)
async def test_every_page_without_a_session_sends_to_the_login(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/login"


async def test_a_wrong_token_is_401_without_a_cookie_and_the_right_one_signs_in(
    client: httpx.AsyncClient,
) -> None:
    login = await client.get("/admin/login")
    assert login.status_code == 200
    assert 'for="token">Admin token</label>' in login.text
    assert ">Sign in</button>" in login.text

    wrong = await client.post("/admin/login", data={"token": "not-the-token"})
    assert wrong.status_code == 401
    assert "set-cookie" not in wrong.headers
    assert "not right" in wrong.text

    right = await client.post("/admin/login", data={"token": ADMIN_TOKEN})
    assert right.status_code == 303 and right.headers["location"] == "/admin"
    cookie = right.headers["set-cookie"]
    assert cookie.startswith("cc_admin=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/admin" in cookie
    assert "Max-Age=28800" in cookie
    assert "Secure" not in cookie  # PUBLIC_BASE_URL is http in tests
    home = await client.get("/admin")
    for label in ("Payments", "Notifications", "Rejected", "Jobs", "Products", "Orders"):
        assert f">{label}</a>" in home.text
    assert ">Webhooks</a>" in home.text and ">Sign out</button>" in home.text


async def test_the_cookie_is_secure_when_the_public_url_is_https(
    engine: AsyncEngine, settings: Settings, sessionmaker: Sessions
) -> None:
    https = settings.model_copy(update={"public_base_url": "https://shop.example"})
    async with other_app(engine, https) as client:
        response = await client.post("/admin/login", data={"token": ADMIN_TOKEN})
    assert response.status_code == 303
    assert "Secure" in response.headers["set-cookie"]


async def test_pages_carry_the_security_headers(client: httpx.AsyncClient) -> None:
    for response in (await client.get("/admin/login"), await client.get("/admin")):
        csp = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src" not in csp
        assert "default-src 'none'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["cache-control"] == "no-store"


async def test_repeated_failures_from_one_address_are_refused_for_a_while(
    client: httpx.AsyncClient,
) -> None:
    for _ in range(5):
        assert (await client.post("/admin/login", data={"token": "guess"})).status_code == 401
    refused = await client.post("/admin/login", data={"token": ADMIN_TOKEN})
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    assert "set-cookie" not in refused.headers


async def test_sign_out_ends_the_session_even_for_a_copy_of_the_cookie(
    client: httpx.AsyncClient,
) -> None:
    csrf = await sign_in(client)
    copied = client.cookies.get("cc_admin")
    assert copied
    out = await client.post("/admin/logout", data={"csrf_token": csrf})
    assert out.status_code == 303 and out.headers["location"] == "/admin/login"
    assert (await client.get("/admin")).status_code == 303
    client.cookies.set("cc_admin", copied, path="/admin")
    assert (await client.get("/admin")).status_code == 303


async def test_an_expired_session_signs_nobody_in(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    await sign_in(client)
    async with sessionmaker() as session:
        await session.execute(
            update(AdminSession).values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()
    response = await client.get("/admin")
    assert response.status_code == 303 and response.headers["location"] == "/admin/login"


async def test_a_changed_admin_token_ends_every_session(
    client: httpx.AsyncClient, engine: AsyncEngine, settings: Settings
) -> None:
    await sign_in(client)
    cookie = client.cookies.get("cc_admin")
    assert cookie
    rotated = settings.model_copy(update={"admin_token": SecretStr("a-brand-new-admin-token")})
    async with other_app(engine, rotated) as after:
        after.cookies.set("cc_admin", cookie, path="/admin")
        assert (await after.get("/admin")).status_code == 303
        assert (await after.post("/admin/login", data={"token": ADMIN_TOKEN})).status_code == 401
        await sign_in(after, "a-brand-new-admin-token")


# -- CSRF -------------------------------------------------------------------------------------


async def _order_state(sessionmaker: Sessions, order_id: Any) -> tuple[str, int]:
    async with sessionmaker() as session:
        order = await session.get(Order, order_id)
        assert order is not None
        actions = await session.scalar(select(func.count()).select_from(AdminAction))
        return order.status.value, int(actions or 0)


async def test_a_post_without_or_with_a_forged_csrf_token_is_403_and_changes_nothing(
    client: httpx.AsyncClient, sessionmaker: Sessions, engine: AsyncEngine, settings: Settings
) -> None:
    paying = await underpaid_order(client, sessionmaker)
    csrf = await sign_in(client)
    url = f"/admin/orders/{paying.order_id}/mark-paid"
    # A second session's token is valid, but not for this session.
    async with other_app(engine, settings) as other:
        foreign = await sign_in(other)
    for data in (
        {"reason": "no token"},
        {"reason": "forged", "csrf_token": "0" * 64},
        {"reason": "someone else's", "csrf_token": foreign},
        {"reason": "tampered", "csrf_token": csrf[:-1] + ("0" if csrf[-1] != "0" else "1")},
    ):
        response = await client.post(url, data=data)
        assert response.status_code == 403, data
        assert await _order_state(sessionmaker, paying.order_id) == ("underpaid", 0)
    cross_site = await client.post(
        url,
        data={"reason": "from elsewhere", "csrf_token": csrf},
        headers={"Origin": "https://evil.example"},
    )
    assert cross_site.status_code == 403
    assert await _order_state(sessionmaker, paying.order_id) == ("underpaid", 0)
    assert (await client.post("/admin/logout")).status_code == 403
    assert (await client.get("/admin")).status_code == 200  # still signed in


async def test_key_import_and_replay_refuse_a_missing_csrf_token(
    client: httpx.AsyncClient, admin: Admin, sessionmaker: Sessions
) -> None:
    product = await admin.product("CSRF-1", keys=1)
    await sign_in(client)
    response = await client.post(
        f"/admin/products/{product['id']}/keys", data={"keys": "NEW-KEY-1"}
    )
    assert response.status_code == 403
    async with sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(LicenceKey)) == 1


# -- actions ----------------------------------------------------------------------------------


async def test_mark_as_paid_from_the_console_fulfils_and_the_timeline_shows_who_and_why(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    paying = await underpaid_order(client, sessionmaker)
    csrf = await sign_in(client)
    page = await client.get(f"/admin/orders/{paying.order_id}")
    assert 'for="reason">Reason</label>' in page.text and ">Mark as paid</button>" in page.text
    assert 'data-amount-missing="' in page.text

    blank = await client.post(
        f"/admin/orders/{paying.order_id}/mark-paid", data={"reason": "  ", "csrf_token": csrf}
    )
    assert blank.status_code == 422 and "reason is required" in blank.text
    assert await _order_state(sessionmaker, paying.order_id) == ("underpaid", 0)

    done = await client.post(
        f"/admin/orders/{paying.order_id}/mark-paid",
        data={"reason": "customer sent the rest by bank", "csrf_token": csrf},
    )
    assert done.status_code == 303
    assert done.headers["location"] == f"/admin/orders/{paying.order_id}"
    await drain(sessionmaker)
    async with sessionmaker() as session:
        label = (await session.execute(select(AdminSession.label))).scalar_one()
    page = await client.get(f"/admin/payments/{paying.payment_id}")
    assert 'data-order-status="fulfilled"' in page.text
    assert f"cause admin by {label}; note: customer sent the rest by bank" in page.text
    assert f"by {label}; reason: customer sent the rest by bank" in page.text
    assert "Mark as paid</button>" not in page.text

    again = await client.post(
        f"/admin/orders/{paying.order_id}/mark-paid", data={"reason": "x", "csrf_token": csrf}
    )
    assert again.status_code == 409


async def test_replay_from_the_console_is_recorded(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    paying = await underpaid_order(client, sessionmaker)
    async with sessionmaker() as session:
        log_id = (await session.execute(select(WebhookLog.id))).scalar_one()
    csrf = await sign_in(client)
    page = await client.get(f"/admin/webhook-logs/{log_id}")
    assert (
        ">Replay</button>" in page.text
        and "&#34;payment_status&#34;: &#34;partially_paid" in page.text
    )
    response = await client.post(
        f"/admin/webhook-logs/{log_id}/replay", data={"csrf_token": csrf, "note": "checking"}
    )
    assert response.status_code == 303
    async with sessionmaker() as session:
        action = (await session.execute(select(AdminAction))).scalar_one()
    assert (action.action, action.note, action.order_id) == ("replay", "checking", paying.order_id)
    assert action.actor.startswith("session ")
    assert await _order_state(sessionmaker, paying.order_id) == ("underpaid", 1)


async def test_retry_of_a_dead_job_from_the_console(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    async with sessionmaker() as session:
        await jobs.enqueue(session, "unknown-kind", {}, max_attempts=1)
        await session.commit()
    await drain(sessionmaker)
    csrf = await sign_in(client)
    listed = await client.get("/admin/jobs", params={"status": "dead"})
    assert ">Retry</button>" in listed.text
    async with sessionmaker() as session:
        job_id = (await session.execute(select(Job.id))).scalar_one()
    response = await client.post(f"/admin/jobs/{job_id}/retry", data={"csrf_token": csrf})
    assert response.status_code == 303
    async with sessionmaker() as session:
        job = await session.get(Job, job_id)
        assert job is not None and job.status is JobStatus.QUEUED
        action = (await session.execute(select(AdminAction))).scalar_one()
    assert action.action == "retry_job"


async def test_products_are_created_edited_and_stocked_from_the_console(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    csrf = await sign_in(client)
    page = await client.get("/admin/products")
    for label in ("SKU", "Name", "Price", "Currency"):
        assert f">{label}</label>" in page.text
    bad = await client.post(
        "/admin/products",
        data={"sku": "BAD SKU", "name": "X", "price": "-1", "currency": "USD", "csrf_token": csrf},
    )
    assert bad.status_code == 422 and 'value="BAD SKU"' in bad.text
    created = await client.post(
        "/admin/products",
        data={
            "sku": "GAME-9",
            "name": "Game",
            "price": "9.99",
            "currency": "usd",
            "csrf_token": csrf,
        },
    )
    assert created.status_code == 303
    product_url = created.headers["location"]
    taken = await client.post(
        "/admin/products",
        data={
            "sku": "GAME-9",
            "name": "Game",
            "price": "9.99",
            "currency": "USD",
            "csrf_token": csrf,
        },
    )
    assert taken.status_code == 409 and "already exists" in taken.text

    imported = await client.post(
        f"{product_url}/keys",
        data={"keys": "K-1\nK-2\n\nK-1\n", "csrf_token": csrf},
        files={"key_file": ("keys.txt", b"K-2\nK-3\n", "text/plain")},
    )
    assert imported.status_code == 200
    assert 'data-keys-added="3" data-keys-duplicates="2"' in imported.text
    assert 'data-stock="3"' in imported.text
    empty = await client.post(f"{product_url}/keys", data={"keys": "\n", "csrf_token": csrf})
    assert empty.status_code == 422

    edited = await client.post(
        product_url,
        data={"name": "Game II", "price": "12.00", "currency": "EUR", "csrf_token": csrf},
    )
    assert edited.status_code == 200 and "Saved." in edited.text
    listed = (
        await client.get("/api/admin/products", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    ).json()
    assert [
        (p["name"], Decimal(p["price"]), p["currency"], p["active"], p["stock"])
        for p in listed["items"]
    ] == [("Game II", Decimal("12"), "EUR", False, 3)]
    async with sessionmaker() as session:
        actions = (await session.execute(select(AdminAction.action))).scalars().all()
    assert sorted(actions) == ["create_product", "edit_product", "import_keys"]
    # Keys are never shown or recorded: only the counts.
    assert "K-1" not in (await client.get(product_url)).text


async def test_lists_filter_and_page(client: httpx.AsyncClient, sessionmaker: Sessions) -> None:

    payings = [await paying_order(sessionmaker, external_id=str(900 + i)) for i in range(3)]
    await notify(client, payings[0], "partially_paid", "0.0001")
    await drain(sessionmaker)
    await sign_in(client)
    underpaid = await client.get("/admin/payments", params={"status": "underpaid"})
    assert ">900</a>" in underpaid.text and ">901</a>" not in underpaid.text
    by_id = await client.get("/admin/payments", params={"external_id": "901"})
    assert ">901</a>" in by_id.text and ">900</a>" not in by_id.text
    by_mail = await client.get("/admin/orders", params={"email": "BUYER@example.com"})
    assert by_mail.text.count('href="/admin/orders/') == 3
    bad = await client.get("/admin/payments", params={"status": "teleported"})
    assert bad.status_code == 422
    bad_cursor = await client.get("/admin/payments", params={"cursor": "garbage!"})
    assert bad_cursor.status_code == 422
    home = await client.get("/admin")
    assert "Payments held for review" not in home.text  # partially_paid is not a review flag
    logs = await client.get("/admin/webhook-logs", params={"external_id": "900"})
    assert "partially_paid" in logs.text


async def test_home_names_a_wrong_ipn_secret_when_signatures_keep_failing(
    client: httpx.AsyncClient,
) -> None:
    import asyncio

    for _ in range(4):
        await client.post(
            "/api/webhooks/nowpayments",
            content=b'{"a": 1}',
            headers={"x-nowpayments-sig": "00" * 64},
        )
    await sign_in(client)
    for _ in range(100):
        home = await client.get("/admin")
        if "invalid signature" in home.text:
            break
        await asyncio.sleep(0.02)
    assert "NOWPAYMENTS_IPN_SECRET is most likely not the IPN secret" in home.text


def test_the_sign_in_throttle_forgives_after_its_window(monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptocheckout.admin import sessions

    now = [1000.0]
    monkeypatch.setattr(sessions.time, "monotonic", lambda: now[0])
    throttle = sessions.LoginThrottle(limit=3, window=60)
    for _ in range(3):
        assert throttle.retry_after("10.0.0.1") is None
        throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == 61
    assert throttle.retry_after("10.0.0.2") is None  # per address
    now[0] += 30
    assert throttle.retry_after("10.0.0.1") == 31
    now[0] += 31
    assert throttle.retry_after("10.0.0.1") is None
    throttle.failed("10.0.0.1")
    throttle.succeeded("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") is None


def test_the_sign_in_throttle_keeps_a_bounded_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptocheckout.admin import sessions

    throttle = sessions.LoginThrottle(limit=1, window=60, max_addresses=100)
    for i in range(1000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle._failures) <= 100
    assert throttle.retry_after("10.0.3.231") is not None  # the newest are kept


async def _fulfilled(client: httpx.AsyncClient, sessionmaker: Sessions) -> Any:

    paying = await paying_order(sessionmaker, external_id="7001")
    await notify(client, paying, "finished", str(paying.pay_amount))
    await drain(sessionmaker)
    return paying


async def test_resend_email_from_the_console_sends_one_message_with_a_fresh_link(
    client: httpx.AsyncClient, sessionmaker: Sessions, settings: Settings
) -> None:
    from cryptocheckout.delivery.wiring import mail_job_handlers
    from cryptocheckout.kit.encryption import keyring_of
    from cryptocheckout.worker import HANDLERS, Worker

    paying = await _fulfilled(client, sessionmaker)
    csrf = await sign_in(client)
    page = await client.get(f"/admin/orders/{paying.order_id}")
    assert ">Resend email</button>" in page.text
    forged = await client.post(f"/admin/orders/{paying.order_id}/resend-email", data={})
    assert forged.status_code == 403
    done = await client.post(
        f"/admin/orders/{paying.order_id}/resend-email", data={"csrf_token": csrf}
    )
    assert done.status_code == 303
    mailer = Worker(
        sessionmaker, handlers={**HANDLERS, **mail_job_handlers(settings, keyring_of(settings))}
    )
    while await mailer.run_once():
        pass
    mails = [path.read_text() for path in settings.mail_dir.glob("*.eml")]
    assert len(mails) == 1 and "/delivery/" in mails[0] and "buyer@example.com" in mails[0]
    page = await client.get(f"/admin/orders/{paying.order_id}")
    assert "a fresh delivery link is mailed (resend-1)" in page.text


async def test_resend_email_through_the_api_is_one_event_per_request(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    paying = await _fulfilled(client, sessionmaker)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    url = f"/api/admin/orders/{paying.order_id}/resend-email"
    first = await client.post(url, headers=headers)
    second = await client.post(url, headers=headers)
    assert (first.status_code, first.json()["event"]) == (202, "resend-1")
    assert (second.status_code, second.json()["event"]) == (202, "resend-2")
    async with sessionmaker() as session:
        keys = (
            await session.execute(select(Job.dedupe_key).where(Job.kind == "send_order_email"))
        ).scalars()
        assert {key for key in keys if key and "resend" in key} == {
            f"email:{paying.order_id}:resend-1",
            f"email:{paying.order_id}:resend-2",
        }
    underpaid = await underpaid_order(client, sessionmaker)
    refused = await client.post(
        f"/api/admin/orders/{underpaid.order_id}/resend-email", headers=headers
    )
    assert refused.status_code == 409


async def _endpoint_with_attempts(sessionmaker: Sessions, order_id: Any) -> tuple[Any, Any, Any]:
    """An endpoint that failed once and a disabled one, each with one logged attempt."""
    async with sessionmaker() as session:
        failing = WebhookEndpoint(
            url="https://erp.example/hooks",
            events=["order.paid"],
            description="the ERP",
            secret="whsec_c2VjcmV0",
            failing_since=utcnow() - timedelta(hours=2),
        )
        disabled = WebhookEndpoint(
            url="https://old.example/hooks",
            enabled=False,
            disabled_reason="disabled after failing without a success since 2026-01-01",
            secret="whsec_b2xk",
        )
        session.add_all([failing, disabled])
        await session.flush()
        event_id = uuid.uuid4()
        attempt = WebhookDelivery(
            endpoint_id=failing.id,
            event_id=event_id,
            event_type="order.paid",
            webhook_id=outbound.webhook_id(event_id),
            status_code=500,
            error="answered 500",
        )
        old = WebhookDelivery(
            endpoint_id=disabled.id,
            event_id=event_id,
            event_type="order.paid",
            webhook_id=outbound.webhook_id(event_id),
            error="connection refused",
        )
        session.add_all([attempt, old])
        await jobs.enqueue(
            session,
            outbound.WEBHOOK_DELIVERY_JOB,
            {"event_id": str(event_id), "order_id": str(order_id), "endpoint_id": str(failing.id)},
            subject_id=order_id,
            dedupe_key=outbound.delivery_key(event_id, failing.id),
        )
        await session.commit()
        return failing, attempt, (disabled, old)


async def test_webhooks_page_shows_endpoints_and_attempts_and_redelivers(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    paying = await underpaid_order(client, sessionmaker)
    csrf = await sign_in(client)
    empty = await client.get("/admin/webhooks")
    assert empty.status_code == 200 and "No webhook endpoints are configured" in empty.text

    failing, attempt, (disabled, old) = await _endpoint_with_attempts(sessionmaker, paying.order_id)
    page = await client.get("/admin/webhooks")
    assert page.status_code == 200
    text = page.text
    assert "https://erp.example/hooks" in text and "https://old.example/hooks" in text
    assert "order.paid" in text and "every event" in text and "the ERP" in text
    assert 'data-endpoint-enabled="true"' in text and 'data-endpoint-enabled="false"' in text
    assert "disabled after failing without a success since 2026-01-01" in text
    assert failing.failing_since.strftime("%Y-%m-%d %H:%M") in text
    assert f'data-delivery-id="{attempt.id}"' in text and attempt.webhook_id in text
    assert ">500</td>" in text and "answered 500" in text and "no answer" in text
    assert "connection refused" in text and text.count(">Redeliver</button>") == 1
    assert "enable the endpoint to redeliver" in text
    assert "whsec_" not in text  # secrets are never listed
    redeliver = f"/admin/webhooks/{failing.id}/deliveries/{attempt.id}/redeliver"
    assert f'action="{redeliver}"' in text

    forged = await client.post(redeliver, data={"csrf_token": "forged"})
    assert forged.status_code == 403
    done = await client.post(redeliver, data={"csrf_token": csrf})
    assert done.status_code == 303 and done.headers["location"] == "/admin/webhooks"
    async with sessionmaker() as session:
        queued = (
            (await session.execute(select(Job).where(Job.kind == outbound.WEBHOOK_DELIVERY_JOB)))
            .scalars()
            .all()
        )
        action = (await session.execute(select(AdminAction))).scalar_one()
    assert len(queued) == 2 and all(
        job.payload["event_id"] == str(attempt.event_id) for job in queued
    )
    assert (action.action, action.subject, action.subject_id) == (
        "redeliver_webhook",
        "webhook_endpoint",
        failing.id,
    )
    assert action.actor.startswith("session ") and attempt.webhook_id in (action.outcome or "")

    refused = await client.post(
        f"/admin/webhooks/{disabled.id}/deliveries/{old.id}/redeliver", data={"csrf_token": csrf}
    )
    assert refused.status_code == 409 and "endpoint is disabled" in refused.text
    missing = await client.post(
        f"/admin/webhooks/{failing.id}/deliveries/{old.id}/redeliver", data={"csrf_token": csrf}
    )
    assert missing.status_code == 404
    async with sessionmaker() as session:
        assert (await session.execute(select(func.count(AdminAction.id)))).scalar_one() == 1


async def test_home_lists_underpaid_orders_with_what_is_missing(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    await sign_in(client)
    assert "Underpaid orders" not in (await client.get("/admin")).text
    paying = await underpaid_order(client, sessionmaker)  # 0.0003 of 0.00045 for 12.50 USD
    home = (await client.get("/admin")).text
    assert "Underpaid orders" in home and "no order is underpaid" not in home
    row = home[home.index(f'data-underpaid-order="{paying.order_id}"') :]
    row = row[: row.index("</tr>")]
    assert f'href="/admin/orders/{paying.order_id}"' in row
    assert 'data-amount-missing="4.16666667"' in row  # exact: 12.50 - 8.33333333
    assert ">4.17 USD</td>" in row and ">12.50 USD</td>" in row

    newer = await paying_order(sessionmaker, external_id="5077125099")
    await notify(client, newer, "partially_paid", "0.0001")
    await drain(sessionmaker)
    home = (await client.get("/admin")).text
    assert home.index(str(newer.order_id)) < home.index(str(paying.order_id))  # newest first
    assert ">9.72 USD</td>" in home  # 12.50 - 2.77777778

    async with sessionmaker() as session:
        await session.execute(
            update(Order).where(Order.id == paying.order_id).values(status="fulfilled")
        )
        await session.commit()
    home = (await client.get("/admin")).text
    assert str(paying.order_id) not in home and str(newer.order_id) in home


async def test_order_currency_amounts_show_to_the_cent(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    paying = await underpaid_order(client, sessionmaker)  # credited 8.33333333 of 12.50
    await sign_in(client)
    for page in (f"/admin/payments/{paying.payment_id}", f"/admin/orders/{paying.order_id}"):
        text = (await client.get(page)).text
        assert "= 8.33 USD" in text and ">4.17 USD</dd>" in text, page
        # (the timeline's audit notes keep their exact figures)
        assert "= 8.33333333 USD" not in text and ">4.16666667 USD" not in text
        assert 'data-amount-missing="4.16666667"' in text  # the exact value stays for machines
        assert "0.0003 " in text  # coins are shown exactly as they came
    async with sessionmaker() as session:
        await session.execute(
            update(Order).where(Order.id == paying.order_id).values(total=Decimal("17.249675"))
        )
        await session.commit()
        stored = await session.get(Order, paying.order_id)
        assert stored is not None and stored.total == Decimal("17.249675")
    order = (await client.get(f"/admin/orders/{paying.order_id}")).text
    assert "17.25 USD" in order and "17.249675" not in order
    listed = (await client.get("/admin/orders")).text
    assert "17.25 USD" in listed and "17.249675" not in listed


async def test_a_webhook_endpoint_is_created_from_the_console_and_its_secret_shown_once(
    client: httpx.AsyncClient, sessionmaker: Sessions
) -> None:
    csrf = await sign_in(client)
    page = (await client.get("/admin/webhooks")).text
    assert 'for="new-url">URL</label>' in page and ">Create endpoint</button>" in page
    assert 'value="order.paid"' in page and 'value="order.refunded"' in page

    refused = await client.post(
        "/admin/webhooks",
        data={"csrf_token": csrf, "url": "ftp://erp.example/x", "description": "kept"},
    )
    assert refused.status_code == 422 and 'id="url-error"' in refused.text
    assert 'value="kept"' in refused.text
    bad_event = await client.post(
        "/admin/webhooks",
        data={"csrf_token": csrf, "url": "https://erp.example/x", "events": "order.nothing"},
    )
    assert bad_event.status_code == 422 and 'id="events-error"' in bad_event.text
    forged = await client.post(
        "/admin/webhooks", data={"csrf_token": "forged", "url": "https://erp.example/x"}
    )
    assert forged.status_code == 403
    async with sessionmaker() as session:
        assert (await session.execute(select(func.count(WebhookEndpoint.id)))).scalar_one() == 0

    created = await client.post(
        "/admin/webhooks",
        data={
            "csrf_token": csrf,
            "url": "https://93.184.216.34/hooks",  # a public address: no DNS needed
            "events": ["order.paid", "order.fulfilled"],
            "description": "ERP",
        },
    )
    assert created.status_code == 201, created.text
    async with sessionmaker() as session:
        endpoint = (await session.execute(select(WebhookEndpoint))).scalar_one()
        action = (await session.execute(select(AdminAction))).scalar_one()
    assert endpoint.events == ["order.fulfilled", "order.paid"] and endpoint.description == "ERP"
    assert f"data-endpoint-secret>{endpoint.secret}</code>" in created.text
    assert created.headers["cache-control"] == "no-store"
    assert (action.action, action.subject_id) == ("create_webhook", endpoint.id)
    outcome = action.outcome or ""
    assert endpoint.secret not in outcome and "93.184" not in outcome
    again = (await client.get("/admin/webhooks")).text
    assert "https://93.184.216.34/hooks" in again and endpoint.secret not in again

    private = await client.post(
        "/admin/webhooks", data={"csrf_token": csrf, "url": "http://127.0.0.1:8999/hooks"}
    )
    assert private.status_code == 422 and "non-public address" in private.text

"""Delivery: keys encrypted at rest, signed expiring links, and the order e-mails as jobs.

Every test runs on SQLite and PostgreSQL; mail goes to a real SMTP server on loopback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import uuid
from datetime import timedelta
from decimal import Decimal
from email import message_from_bytes, policy
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cryptocheckout.catalogue import service as catalogue
from cryptocheckout.catalogue.models import LicenceKey
from cryptocheckout.catalogue.rotation import rotate_keys
from cryptocheckout.config import Settings
from cryptocheckout.delivery import service as delivery
from cryptocheckout.delivery.jobs import (
    SEND_ORDER_EMAIL_JOB,
    enqueue_order_email,
    order_email_handler,
)
from cryptocheckout.delivery.links import DeliveryLinks
from cryptocheckout.delivery.models import Delivery
from cryptocheckout.delivery.wiring import delivery_links
from cryptocheckout.fulfilment.handlers import fulfil_order
from cryptocheckout.kit import jobs
from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.encryption import KeyRing, generate_key, keyring_of
from cryptocheckout.kit.jobs_models import Job, JobStatus
from cryptocheckout.kit.mail import FileMailer, Mailer, SmtpMailer
from cryptocheckout.orders.models import Order, OrderStatus
from cryptocheckout.payments.models import Payment
from tests.conftest import Admin
from tests.support.shop import paying_order
from tests.support.smtp import Received, free_port, smtp_server

Sessions = async_sessionmaker[AsyncSession]
FROM = "Test Shop <shop@example.com>"
LINK = re.compile(r"https?://[^\s\"'<>]+/delivery/([A-Za-z0-9._-]+)")


@pytest.fixture
def ring(settings: Settings) -> KeyRing:
    return keyring_of(settings)


@pytest.fixture
def links(settings: Settings, ring: KeyRing) -> DeliveryLinks:
    return delivery_links(settings, ring)


async def fulfilled_order(sessionmaker: Sessions, quantity: int = 2) -> uuid.UUID:
    """An order paid and fulfilled by the real fulfilment job, holding `quantity` keys."""
    paying = await paying_order(
        sessionmaker,
        quantity=quantity,
        keys=quantity + 1,
        external_id=str(uuid.uuid4().int % 10**10),
    )
    async with sessionmaker() as session:
        await session.execute(
            update(Order).where(Order.id == paying.order_id).values(status=OrderStatus.PAID)
        )
        await fulfil_order(session, {"order_id": str(paying.order_id)})
        await session.commit()
    return paying.order_id


async def plain_keys(sessionmaker: Sessions, ring: KeyRing, order_id: uuid.UUID) -> list[str]:
    async with sessionmaker() as session:
        return [item.key for item in await catalogue.keys_of_order(session, ring, order_id)]


async def raw_dump(sessionmaker: Sessions) -> str:
    """Every row of every table that holds key material or mail, as the database returns it."""
    rows = []
    async with sessionmaker() as session:
        for table in ("licence_keys", "jobs", "deliveries", "orders", "status_changes"):
            rows += [
                repr(tuple(row))
                for row in await session.execute(text(f"SELECT * FROM {table}"))  # noqa: S608 - fixed names
            ]
    return "\n".join(rows)


async def database_dump(database_url: str, dialect: str) -> bytes:
    """What an operator's backup holds: pg_dump's output, or the SQLite files' bytes."""
    if dialect == "sqlite":
        return await sqlite_bytes(database_url)
    done = await asyncio.to_thread(
        subprocess.run,
        ["pg_dump", "--data-only", database_url],
        capture_output=True,
        check=True,
    )
    return done.stdout


async def sqlite_bytes(database_url: str) -> bytes:
    """The database file and its WAL, read by another process.

    Not read here: closing any descriptor of the file would drop this process's POSIX locks
    on it, which SQLite's open connections rely on (another process could then delete the WAL).
    """
    path = Path(str(make_url(database_url).database))
    files = [str(p) for p in (path, Path(f"{path}-wal")) if p.exists()]
    done = await asyncio.to_thread(subprocess.run, ["cat", *files], capture_output=True, check=True)
    return done.stdout


async def run_mail_jobs(
    sessionmaker: Sessions, mailer: Mailer, links: DeliveryLinks
) -> list[JobStatus]:
    handlers = {SEND_ORDER_EMAIL_JOB: order_email_handler(mailer, links, "Test Shop")}
    claimed = await jobs.claim(sessionmaker, "w1", kinds=[SEND_ORDER_EMAIL_JOB], limit=10)
    return [await jobs.run_one(sessionmaker, job, "w1", handlers) for job in claimed]


async def mail_jobs(sessionmaker: Sessions) -> list[Job]:
    async with sessionmaker() as session:
        rows = await session.execute(
            select(Job).where(Job.kind == SEND_ORDER_EMAIL_JOB).order_by(Job.created_at)
        )
        return list(rows.scalars())


def smtp(port: int) -> SmtpMailer:
    return SmtpMailer.from_url(f"smtp://127.0.0.1:{port}", FROM)


# Keys at rest -------------------------------------------------------------------------------


async def test_imported_keys_are_stored_encrypted_and_never_listed(
    admin: Admin, client: httpx.AsyncClient, sessionmaker: Sessions, database_url: str, dialect: str
) -> None:
    product = await admin.product(sku="ENC-1", keys=0)
    keys = [f"PLAIN-{uuid.uuid4().hex}" for _ in range(3)]
    added = await client.post(
        f"/api/admin/products/{product['id']}/keys", json={"keys": keys}, headers=admin.headers
    )
    assert added.json() == {"added": 3, "duplicates": 0}
    again = await client.post(
        f"/api/admin/products/{product['id']}/keys",
        json={"keys": [keys[0], keys[0], "PLAIN-new"]},
        headers=admin.headers,
    )
    assert again.json() == {"added": 1, "duplicates": 2}

    dump = await raw_dump(sessionmaker)
    assert "v1:" in dump
    for key in [*keys, "PLAIN-new"]:
        assert key not in dump
    backup = await database_dump(database_url, dialect)
    assert b"v1:" in backup
    assert not any(key.encode() in backup for key in [*keys, "PLAIN-new"])
    listing = await client.get("/api/products")
    assert "PLAIN-" not in listing.text
    assert [p["in_stock"] for p in listing.json()["items"] if p["id"] == product["id"]] == [True]


async def test_rotation_with_two_keys_keeps_keys_readable_and_duplicates_found(
    sessionmaker: Sessions, database_url: str, ring: KeyRing, settings: Settings
) -> None:
    paying = await paying_order(sessionmaker, keys=0)
    old_setting = settings.keys_encryption_key.get_secret_value()
    new_key = generate_key()
    keys = [f"ROT-{i}-{uuid.uuid4().hex[:6]}" for i in range(5)]
    async with sessionmaker() as session:
        assert await catalogue.add_keys(session, ring, paying.product_id, keys) == (5, 0)
        await session.commit()

    during = KeyRing.parse(f"{new_key},{old_setting}")
    async with sessionmaker() as session:
        # Before any row is rotated: the old hashes still catch every duplicate.
        assert await catalogue.add_keys(session, during, paying.product_id, [*keys, "ROT-new"]) == (
            1,
            5,
        )
        await session.commit()
    assert await rotate_keys(database_url, during, batch=2) == 5  # ROT-new was new already
    assert await rotate_keys(database_url, during, batch=2) == 0  # resumable: nothing left

    after = KeyRing.parse(new_key)
    async with sessionmaker() as session:
        rows = (await session.execute(select(LicenceKey))).scalars().all()
        assert {row.key_id for row in rows} == {after.current.key_id}
        opened = {after.open(row.ciphertext, row_id=row.id.bytes) for row in rows}
        assert opened == {*keys, "ROT-new"}
        # The old key retired: duplicates are still found, under the new key's hashes.
        assert await catalogue.add_keys(session, after, paying.product_id, keys) == (0, 5)
        await session.commit()


async def test_rotation_skips_nothing_when_batches_are_interrupted(
    sessionmaker: Sessions, database_url: str, ring: KeyRing, settings: Settings
) -> None:
    paying = await paying_order(sessionmaker, keys=7)
    during = KeyRing.parse(f"{generate_key()},{settings.keys_encryption_key.get_secret_value()}")
    async with sessionmaker() as session:
        assert await catalogue.rotate_keys_batch(session, during, limit=3) == 3
        await session.rollback()  # an interrupted batch changes nothing
    async with sessionmaker() as session:
        assert await catalogue.rotate_keys_batch(session, during, limit=3) == 3
        await session.commit()  # a batch that committed is not done again
    assert await rotate_keys(database_url, during) == 4
    assert paying.product_id


# Delivery links -----------------------------------------------------------------------------


async def test_a_valid_link_shows_the_keys_offers_a_download_and_counts_views(
    client: httpx.AsyncClient, sessionmaker: Sessions, ring: KeyRing, links: DeliveryLinks
) -> None:
    order_id = await fulfilled_order(sessionmaker)
    keys = await plain_keys(sessionmaker, ring, order_id)
    assert len(keys) == 2
    token = links.token(order_id, utcnow())

    page = await client.get(f"/delivery/{token}")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["referrer-policy"] == "no-referrer"
    html = page.text
    assert sorted(re.findall(r'data-licence-key="([^"]+)"', html)) == sorted(keys)
    assert '<main id="main"' in html and "<h1>" in html and 'name="viewport"' in html
    # The shop's own layout: its stylesheet, name and support address.
    assert '<link rel="stylesheet" href="/static/pages.css">' in html
    assert 'class="brand" href="/">' in html and 'href="mailto:support@example.com"' in html
    assert "style-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert html.count('class="copy" data-copy="key-') == len(keys)
    assert "buyer@example.com" not in html
    download_path = f"/delivery/{token}/download"
    assert f'href="{download_path}"' in html and ">Download</a>" in html

    download = await client.get(download_path)
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/plain")
    assert download.headers["cache-control"] == "no-store"
    assert sorted(line.split("\t")[1] for line in download.text.splitlines()) == sorted(keys)

    css = await client.get("/static/pages.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "ul.keys" in css.text

    async with sessionmaker() as session:
        counted = await session.get(Delivery, order_id)
        assert counted is not None and counted.views == 2


async def test_altered_unknown_or_undelivered_links_are_404(
    client: httpx.AsyncClient, sessionmaker: Sessions, links: DeliveryLinks, ring: KeyRing
) -> None:
    order_id = await fulfilled_order(sessionmaker)
    token = links.token(order_id, utcnow())
    altered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    foreign = DeliveryLinks(KeyRing.parse(generate_key()), "http://x", timedelta(days=1))
    unpaid = await paying_order(sessionmaker, external_id="5077125099")
    for bad in (
        altered,
        token[:-1],
        "nonsense",
        foreign.token(order_id, utcnow()),  # signed, but not by this shop's keys
        links.token(uuid.uuid4(), utcnow()),  # signed, for no order
        links.token(unpaid.order_id, utcnow()),  # an order with nothing delivered
    ):
        for path in (f"/delivery/{bad}", f"/delivery/{bad}/download"):
            response = await client.get(path)
            assert response.status_code == 404, path
            assert "data-licence-key" not in response.text
        assert (await client.post(f"/delivery/{bad}/new-link")).status_code == 404
    assert await mail_jobs(sessionmaker) == []


async def test_expired_link_is_410_and_mails_a_fresh_link_rate_limited(
    client: httpx.AsyncClient,
    sessionmaker: Sessions,
    links: DeliveryLinks,
    ring: KeyRing,
) -> None:
    order_id = await fulfilled_order(sessionmaker)
    keys = await plain_keys(sessionmaker, ring, order_id)
    now = utcnow()
    expired = links.token(order_id, now - links.ttl - timedelta(seconds=1))
    almost = links.token(order_id, now - links.ttl + timedelta(seconds=30))
    assert (await client.get(f"/delivery/{almost}")).status_code == 200

    page = await client.get(f"/delivery/{expired}")
    assert page.status_code == 410
    assert page.headers["cache-control"] == "no-store"
    assert "data-licence-key" not in page.text and keys[0] not in page.text
    assert "buyer@example.com" not in page.text
    assert re.search(r'<form method="post" action="/delivery/[^"]+/new-link">', page.text)
    assert ">Email me a new link</button>" in page.text
    assert (await client.get(f"/delivery/{expired}/download")).status_code == 410

    sent = await client.post(f"/delivery/{expired}/new-link")
    assert sent.status_code == 202 and "buyer@example.com" not in sent.text
    too_soon = await client.post(f"/delivery/{expired}/new-link")
    assert too_soon.status_code == 429 and "buyer@example.com" not in too_soon.text
    [job] = await mail_jobs(sessionmaker)
    assert job.dedupe_key == f"email:{order_id}:resend-1"

    # Past the interval (time passed in, not slept), another request is its own event.
    async with sessionmaker() as session:
        later = now + delivery.FRESH_LINK_INTERVAL + timedelta(seconds=1)
        await delivery.request_fresh_link(session, links, expired, later)
        await session.commit()
    assert [j.dedupe_key for j in await mail_jobs(sessionmaker)] == [
        f"email:{order_id}:resend-1",
        f"email:{order_id}:resend-2",
    ]

    with smtp_server() as (inbox, port):
        assert await run_mail_jobs(sessionmaker, smtp(port), links) == [JobStatus.SUCCEEDED] * 2
    assert len(inbox.received) == 2
    fresh = _only_link(inbox.received[0])
    assert (await client.get(f"/delivery/{fresh}")).status_code == 200
    for received in inbox.received:
        assert received.recipients == ["buyer@example.com"]
        assert not any(key.encode() in received.data for key in keys)


def _only_link(received: Received) -> str:
    text_body, html_body = received.bodies()
    [from_text] = set(LINK.findall(text_body))
    [from_html] = set(LINK.findall(html_body))
    assert from_text == from_html
    return from_text


async def test_links_are_checked_against_the_time_passed_in(
    sessionmaker: Sessions, ring: KeyRing, links: DeliveryLinks
) -> None:
    order_id = await fulfilled_order(sessionmaker)
    now = utcnow()
    token = links.token(order_id, now)
    async with sessionmaker() as session:
        page = await delivery.open_delivery(
            session, ring, links, token, now + links.ttl - timedelta(seconds=1)
        )
        assert len(page.keys) == 2
        with pytest.raises(delivery.LinkExpired):
            await delivery.open_delivery(session, ring, links, token, now + links.ttl)


# E-mail jobs --------------------------------------------------------------------------------


async def test_fulfilled_mail_is_sent_once_with_the_link_and_never_the_keys(
    client: httpx.AsyncClient,
    sessionmaker: Sessions,
    ring: KeyRing,
    links: DeliveryLinks,
    database_url: str,
    dialect: str,
) -> None:
    order_id = await fulfilled_order(sessionmaker)
    keys = await plain_keys(sessionmaker, ring, order_id)
    for _ in range(3):  # redeliveries, replays, a second worker: one job
        async with sessionmaker() as session:
            await enqueue_order_email(session, order_id, "fulfilled")
            await session.commit()
    with smtp_server() as (inbox, port):
        assert await run_mail_jobs(sessionmaker, smtp(port), links) == [JobStatus.SUCCEEDED]
        assert await run_mail_jobs(sessionmaker, smtp(port), links) == []
    [received] = inbox.received
    assert received.recipients == ["buyer@example.com"]
    assert "ready" in received.message["Subject"]
    token = _only_link(received)
    assert not any(key.encode() in received.data for key in keys)
    page = await client.get(f"/delivery/{token}")
    assert sorted(re.findall(r'data-licence-key="([^"]+)"', page.text)) == sorted(keys)
    dump = await raw_dump(sessionmaker)
    assert not any(key in dump for key in keys)
    backup = await database_dump(database_url, dialect)
    assert b"v1:" in backup and b"buyer@example.com" in backup  # the dump is real
    assert not any(key.encode() in backup for key in keys)


async def test_a_5xx_refusal_ends_the_job_dead_with_the_reason(
    sessionmaker: Sessions, links: DeliveryLinks
) -> None:
    order_id = await fulfilled_order(sessionmaker)
    async with sessionmaker() as session:
        await enqueue_order_email(session, order_id, "fulfilled")
        await session.commit()
    with smtp_server() as (inbox, port):
        inbox.refuse.add("buyer@example.com")
        assert await run_mail_jobs(sessionmaker, smtp(port), links) == [JobStatus.DEAD]
    [job] = await mail_jobs(sessionmaker)
    assert job.status is JobStatus.DEAD and job.attempts == 1
    assert job.last_error is not None and "550" in job.last_error
    assert "buyer@example.com" not in job.last_error


async def test_an_smtp_outage_delays_mail_and_never_loses_it(
    sessionmaker: Sessions, links: DeliveryLinks
) -> None:
    order_id = await fulfilled_order(sessionmaker)
    async with sessionmaker() as session:
        await enqueue_order_email(session, order_id, "fulfilled")
        await session.commit()
    port = free_port()
    for _ in range(3):  # far more attempts than a failing job may have would still not kill it
        assert await run_mail_jobs(sessionmaker, smtp(port), links) == [JobStatus.QUEUED]
        async with sessionmaker() as session:
            await session.execute(update(Job).values(run_at=utcnow() - timedelta(seconds=1)))
            await session.commit()
    [job] = await mail_jobs(sessionmaker)
    assert job.status is JobStatus.QUEUED and "MailDelayed" in (job.last_error or "")
    with smtp_server() as (inbox, _):
        pass  # a server on another port: nothing reaches it
    assert inbox.received == []
    with smtp_server() as (inbox, up_port):
        assert await run_mail_jobs(sessionmaker, smtp(up_port), links) == [JobStatus.SUCCEEDED]
    assert len(inbox.received) == 1


async def test_underpaid_mail_says_what_arrived_what_is_missing_and_what_to_do(
    sessionmaker: Sessions, links: DeliveryLinks, settings: Settings
) -> None:
    paying = await paying_order(sessionmaker, pay_amount="0.00045")
    async with sessionmaker() as session:
        await session.execute(
            update(Payment)
            .where(Payment.id == paying.payment_id)
            .values(actually_paid=Decimal("0.0003"))
        )
        await enqueue_order_email(
            session, paying.order_id, "underpaid", details={"missing_in_order_currency": "4.17 USD"}
        )
        await session.commit()
    with smtp_server() as (inbox, port):
        assert await run_mail_jobs(sessionmaker, smtp(port), links) == [JobStatus.SUCCEEDED]
    text_body, html_body = inbox.received[0].bodies()
    for body in (text_body, html_body):
        assert "0.00030000 BTC" in body or "0.0003 BTC" in body
        assert "0.00015" in body and "4.17 USD" in body
        assert f"{settings.public_base_url}/orders/{paying.order_id}" in body


@pytest.mark.parametrize("event", ["expired", "failed"])
async def test_expired_and_failed_mails_link_back_to_the_order(
    sessionmaker: Sessions, links: DeliveryLinks, settings: Settings, tmp_path: Path, event: str
) -> None:
    paying = await paying_order(sessionmaker)
    async with sessionmaker() as session:
        await enqueue_order_email(session, paying.order_id, event)
        await session.commit()
    mailer = FileMailer(tmp_path / "mail", FROM)  # the .eml fallback, as the demo uses
    assert await run_mail_jobs(sessionmaker, mailer, links) == [JobStatus.SUCCEEDED]
    [eml] = list((tmp_path / "mail").glob("*.eml"))
    data = eml.read_bytes()
    # With the order's token, so that the link opens the order in any browser.
    text = message_from_bytes(data, policy=policy.default).get_body(("plain",))
    assert text is not None
    assert f"/orders/{paying.order_id}?token=token" in str(text.get_content())
    assert b"/delivery/" not in data


async def test_the_underpaid_mail_takes_what_is_missing_from_the_orders_balance(
    sessionmaker: Sessions, links: DeliveryLinks, tmp_path: Path
) -> None:
    """As the order events enqueue it: no details given, the balance says what is due."""
    paying = await paying_order(sessionmaker, pay_amount="0.00045")
    async with sessionmaker() as session:
        await session.execute(
            update(Payment)
            .where(Payment.id == paying.payment_id)
            .values(actually_paid=Decimal("0.0003"), credit=Decimal("8.33333333"))
        )
        await enqueue_order_email(session, paying.order_id, "underpaid")
        await session.commit()
    mailer = FileMailer(tmp_path / "mail", FROM)
    assert await run_mail_jobs(sessionmaker, mailer, links) == [JobStatus.SUCCEEDED]
    [eml] = list((tmp_path / "mail").glob("*.eml"))
    assert b"4.16666667 USD" in eml.read_bytes()


async def test_unknown_events_are_refused_when_enqueued(sessionmaker: Sessions) -> None:
    async with sessionmaker() as session:
        with pytest.raises(ValueError, match="no e-mail"):
            await enqueue_order_email(session, uuid.uuid4(), "paid")


async def test_an_injected_address_dies_without_reaching_smtp(
    sessionmaker: Sessions, links: DeliveryLinks
) -> None:
    order_id = await fulfilled_order(sessionmaker)
    async with sessionmaker() as session:
        await session.execute(
            update(Order)
            .where(Order.id == order_id)
            .values(email="a@example.com\r\nBcc: b@example.com")
        )
        await enqueue_order_email(session, order_id, "fulfilled")
        await session.commit()
    with smtp_server() as (inbox, port):
        assert await run_mail_jobs(sessionmaker, smtp(port), links) == [JobStatus.DEAD]
    assert inbox.commands == [] and inbox.received == []


async def test_no_key_or_address_in_the_logs(
    client: httpx.AsyncClient,
    sessionmaker: Sessions,
    ring: KeyRing,
    links: DeliveryLinks,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="cryptocheckout")
    order_id = await fulfilled_order(sessionmaker)
    keys = await plain_keys(sessionmaker, ring, order_id)
    token = links.token(order_id, utcnow())
    assert (await client.get(f"/delivery/{token}")).status_code == 200
    assert (await client.get(f"/delivery/{token}/download")).status_code == 200
    async with sessionmaker() as session:
        await enqueue_order_email(session, order_id, "fulfilled")
        await enqueue_order_email(session, order_id, "resend-1")
        await session.commit()
    with smtp_server() as (inbox, port):
        inbox.refuse.add("buyer@example.com")  # a refusal is logged: with no address in it
        assert await run_mail_jobs(sessionmaker, smtp(port), links) == [JobStatus.DEAD] * 2
    logged = "\n".join(
        record.getMessage() + (str(record.exc_info[1]) if record.exc_info else "")
        for record in caplog.records
        if record.name not in ("mail.log", "httpx")  # the test's SMTP server and client
    )
    assert "gave up" in logged and "GET /delivery/***/download 200" in logged
    for secret in (*keys, "buyer@example.com", token):
        assert secret not in logged


async def test_rotate_keys_command_re_encrypts_under_the_first_key(
    sessionmaker: Sessions, database_url: str, settings: Settings
) -> None:
    paying = await paying_order(sessionmaker, keys=5)
    old = settings.keys_encryption_key.get_secret_value()
    new = generate_key()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "KEYS_ENCRYPTION_KEY": f"{new},{old}",
        "CRYPTOCHECKOUT_MODE": "test",
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cryptocheckout", "rotate-keys", "--batch", "2"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "5 licence keys re-encrypted" in done.stdout
    assert new not in done.stdout + done.stderr and old not in done.stdout + done.stderr
    ring = KeyRing.parse(new)
    async with sessionmaker() as session:
        rows = (
            (
                await session.execute(
                    select(LicenceKey).where(LicenceKey.product_id == paying.product_id)
                )
            )
            .scalars()
            .all()
        )
    assert {row.key_id for row in rows} == {ring.current.key_id}
    assert all(ring.open(row.ciphertext, row_id=row.id.bytes).startswith("KEY-") for row in rows)

    broken = {**env, "KEYS_ENCRYPTION_KEY": "short"}
    refused = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "cryptocheckout", "rotate-keys"],
        env=broken,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2
    assert "KEYS_ENCRYPTION_KEY" in refused.stderr and "short" not in refused.stderr


async def test_two_workers_and_repeated_causes_send_one_message_per_order_and_event(
    sessionmaker: Sessions, links: DeliveryLinks
) -> None:
    orders = [await fulfilled_order(sessionmaker) for _ in range(3)]
    for _ in range(2):  # the same causes again: a redelivery, a replay
        async with sessionmaker() as session:
            for order_id in orders:
                await enqueue_order_email(session, order_id, "fulfilled")
            await session.commit()

    with smtp_server() as (inbox, port):
        handlers = {SEND_ORDER_EMAIL_JOB: order_email_handler(smtp(port), links, "Test Shop")}

        async def worker(name: str) -> None:
            while claimed := await jobs.claim(sessionmaker, name, kinds=[SEND_ORDER_EMAIL_JOB]):
                for job in claimed:
                    await jobs.run_one(sessionmaker, job, name, handlers)

        await asyncio.gather(worker("w1"), worker("w2"))
    assert len(inbox.received) == 3
    assert all(job.status is JobStatus.SUCCEEDED for job in await mail_jobs(sessionmaker))


async def test_no_link_is_mailed_for_an_order_refunded_meanwhile(
    sessionmaker: Sessions, links: DeliveryLinks
) -> None:
    order_id = await fulfilled_order(sessionmaker)
    async with sessionmaker() as session:
        await enqueue_order_email(session, order_id, "fulfilled")
        await session.execute(
            update(Order).where(Order.id == order_id).values(status=OrderStatus.REFUNDED)
        )
        await session.commit()
    with smtp_server() as (inbox, port):
        assert await run_mail_jobs(sessionmaker, smtp(port), links) == [JobStatus.SUCCEEDED]
    assert inbox.received == []


async def test_every_mail_names_its_order_items_total_and_where_to_ask(
    sessionmaker: Sessions, links: DeliveryLinks, tmp_path: Path
) -> None:
    """A customer with two orders tells the mails apart; the support address is in each."""
    from cryptocheckout.delivery.jobs import send_order_email

    paying = await paying_order(sessionmaker, price="12.50", quantity=2)
    mailer = FileMailer(tmp_path / "mail", FROM)
    async with sessionmaker() as session:
        await send_order_email(
            session,
            {"order_id": str(paying.order_id), "event": "expired"},
            mailer=mailer,
            links=links,
            shop_name="Test Shop",
            support_email="help@shop.example",
        )
    [eml] = list((tmp_path / "mail").glob("*.eml"))
    mail = message_from_bytes(eml.read_bytes(), policy=policy.default)
    number = str(paying.order_id)[:8]
    assert f"order {number}" in str(mail["Subject"])
    for part in ("plain", "html"):
        body = mail.get_body((part,))
        assert body is not None
        content = str(body.get_content())
        assert f"Order {number}" in content and "Game" in content
        assert "25.00 USD" in content and "help@shop.example" in content

"""A database that does not answer: every endpoint 503 problem+json within seconds, the
connection still usable, and the log one line per failure (a traceback once per cause)."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx
import pytest

from cryptocheckout.app import create_app
from cryptocheckout.config import Mode, Settings
from cryptocheckout.kit.logsafe import FailureLog
from cryptocheckout.kit.serving import server_config
from tests.support.servers import (
    free_port,
    freezable_proxy,
    hung_listener,
    serve_config_in_thread,
)

ADMIN_TOKEN = "outage-admin-token-0123456789abcdef"
ORDER = "00000000-0000-4000-8000-000000000000"
# (method, path, JSON body, headers): every kind of endpoint that needs the database.
ENDPOINTS = [
    ("GET", "/api/products", None, {}),
    ("GET", f"/api/orders/{ORDER}", None, {"X-Order-Token": "t" * 40}),
    (
        "POST",
        "/api/orders",
        {"email": "buyer@example.com", "items": [{"product_id": ORDER, "quantity": 1}]},
        {"Idempotency-Key": "outage-1"},
    ),
    ("POST", "/api/payments", {"order_id": ORDER, "pay_currency": None}, {"X-Order-Token": "t"}),
    ("GET", "/api/admin/payments", None, {"Authorization": f"Bearer {ADMIN_TOKEN}"}),
    ("GET", "/api/admin/webhook-logs", None, {"Authorization": f"Bearer {ADMIN_TOKEN}"}),
    ("GET", "/api/admin/jobs", None, {"Authorization": f"Bearer {ADMIN_TOKEN}"}),
    (
        "POST",
        "/api/admin/products",
        {"sku": "X-1", "name": "X", "price": "1.00", "currency": "USD"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ),
]


@pytest.fixture(autouse=True)
def fresh_failure_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no cause seen yet (the logs remember causes for a minute)."""
    from cryptocheckout import worker
    from cryptocheckout.kit import jobs, problems
    from cryptocheckout.webhooks import processor

    for module in (problems, worker, jobs, processor):
        monkeypatch.setattr(module, "failures", FailureLog(module.failures.logger))


def _settings(database_url: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        mode=Mode.TEST,
        database_url=database_url,
        admin_token=ADMIN_TOKEN,
        nowpayments_api_key="test-api-key",
        nowpayments_ipn_secret="test-ipn-secret",
    )


@contextmanager
def _dead_database(kind: str) -> Iterator[str]:
    if kind == "refused":
        yield f"postgresql://postgres@127.0.0.1:{free_port()}/shop"
        return
    with hung_listener() as port:
        yield f"postgresql://postgres@127.0.0.1:{port}/shop"


def _request(
    conn: http.client.HTTPConnection,
    method: str,
    path: str,
    body: object,
    headers: dict[str, str],
) -> tuple[int, dict[str, str], bytes]:
    data = json.dumps(body).encode() if body is not None else None
    sent = {**headers, **({"Content-Type": "application/json"} if data else {})}
    conn.request(method, path, body=data, headers=sent)
    response = conn.getresponse()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


@pytest.mark.parametrize("kind", ["refused", "hung"])
def test_every_endpoint_answers_503_and_keeps_the_connection(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    endpoints = ENDPOINTS if kind == "refused" else ENDPOINTS[:3]  # each hung one waits 3 s
    with (
        _dead_database(kind) as url,
        serve_config_in_thread(
            server_config(
                create_app(_settings(url)),
                host="127.0.0.1",
                port=free_port(),
                log_level="warning",
                loop="asyncio",
            )
        ) as base,
        caplog.at_level(logging.ERROR, logger="cryptocheckout"),
    ):
        address = urlsplit(base)
        conn = http.client.HTTPConnection(address.hostname or "", address.port, timeout=20)
        _request(conn, "GET", "/healthz", None, {})
        sock = conn.sock
        for method, path, body, headers in endpoints:
            status, got, raw = _request(conn, method, path, body, headers)
            assert status == 503, (path, status, raw)
            assert got["content-type"] == "application/problem+json"
            assert got["retry-after"] == "5"
            assert json.loads(raw)["type"] == "database-unavailable"
            assert got.get("connection", "").lower() != "close"
        # The same connection, still open, answers the next request.
        assert _request(conn, "GET", "/healthz", None, {})[0] == 200
        assert conn.sock is sock
        conn.close()
    failures = [r for r in caplog.records if r.name == "cryptocheckout.http"]
    assert len(failures) == len(endpoints)
    assert len([r for r in failures if r.exc_info]) == 1, "one traceback per cause"


async def test_asgi_client_sees_503_when_the_database_refuses() -> None:
    app = create_app(_settings(f"postgresql://postgres@127.0.0.1:{free_port()}/shop"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as c:
            for method, path, body, headers in ENDPOINTS:
                response = await c.request(method, path, json=body, headers=headers)
                assert response.status_code == 503, (path, response.text)


async def test_a_worker_in_an_outage_logs_each_round_once_and_one_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from cryptocheckout.kit.db import create_engine, create_sessionmaker
    from cryptocheckout.worker import Worker

    engine = create_engine(f"postgresql://postgres@127.0.0.1:{free_port()}/shop")
    worker = Worker(create_sessionmaker(engine), poll_interval=0.01)
    stop = asyncio.Event()

    def rounds() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "worker round failed" in r.getMessage()]

    def worker_records() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "cryptocheckout.worker"]

    with caplog.at_level(logging.ERROR, logger="cryptocheckout"):
        task = asyncio.create_task(worker.run(stop))
        for _ in range(500):
            if len(rounds()) >= 5:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await task
    await engine.dispose()
    assert len(rounds()) >= 5
    # Housekeeping and the rounds fail alike (connection refused): one traceback for both.
    assert len([r for r in worker_records() if r.exc_info]) == 1
    assert "ConnectionRefusedError" in rounds()[-1].getMessage()


def test_failure_log_repeats_the_traceback_once_per_cause_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    failures = FailureLog(
        logging.getLogger("cryptocheckout.test"), interval=60, clock=lambda: now[0]
    )

    def fail(exc: Exception) -> None:
        try:
            raise exc
        except Exception as raised:
            failures.failure(raised, "doing %s failed", "x")

    with caplog.at_level(logging.ERROR, logger="cryptocheckout.test"):
        for _ in range(3):
            fail(ValueError("a"))
        fail(KeyError("b"))  # another cause: its own traceback
        now[0] = 61.0
        fail(ValueError("a"))
    traced = [bool(r.exc_info) for r in caplog.records]
    assert traced == [True, False, False, True, True]
    assert "2 more like it" in caplog.records[-1].getMessage()


async def test_an_exhausted_pool_is_503_not_a_wait(
    settings: Settings, database_url: str, sessionmaker: object
) -> None:
    from cryptocheckout.kit.db import create_engine

    engine = create_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=0.5)
    app = create_app(settings, engine=engine)
    try:
        async with app.router.lifespan_context(app), engine.connect() as held:
            await held.exec_driver_sql("SELECT 1")  # the pool's only connection, taken
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as c:
                response = await c.get("/api/products")
        assert response.status_code == 503
        assert response.json()["type"] == "database-unavailable"
    finally:
        await engine.dispose()


async def test_a_locked_sqlite_database_is_503_after_the_busy_timeout(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from cryptocheckout.kit import db
    from cryptocheckout.kit.migrate import upgrade

    path = f"{tmp_path}/locked.db"
    await asyncio.to_thread(upgrade, f"sqlite:///{path}")
    monkeypatch.setattr(db, "SQLITE_BUSY_TIMEOUT_MS", 300)
    app = create_app(_settings(f"sqlite:///{path}"))
    other = sqlite3.connect(path, isolation_level=None)  # another process's writer
    try:
        async with app.router.lifespan_context(app):
            other.execute("BEGIN IMMEDIATE")
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as c:
                order = {
                    "email": "buyer@example.com",
                    "items": [
                        {"product_id": "00000000-0000-4000-8000-000000000000", "quantity": 1}
                    ],
                }
                response = await c.post("/api/orders", json=order)
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "5"
                # Readers take no write lock: they are served meanwhile.
                assert (await c.get("/api/products")).status_code == 200
                other.execute("ROLLBACK")
                assert (await c.post("/api/orders", json=order)).status_code == 422
    finally:
        other.close()


async def test_a_database_that_hangs_mid_session_is_503_then_recovers(
    tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    from sqlalchemy.engine import make_url

    from cryptocheckout.kit.migrate import upgrade
    from tests.conftest import fresh_database

    async with fresh_database("postgresql", tmp_path) as real_url:
        await asyncio.to_thread(upgrade, real_url)
        real = make_url(real_url)
        with freezable_proxy(real.port or 5432) as (port, frozen):
            settings = _settings(real.set(port=port).render_as_string(hide_password=False))
            settings.database_command_timeout_seconds = 2.0
            config = server_config(
                create_app(settings),
                host="127.0.0.1",
                port=free_port(),
                log_level="warning",
                loop="asyncio",
            )
            with serve_config_in_thread(config) as base:
                address = urlsplit(base)
                conn = http.client.HTTPConnection(address.hostname or "", address.port, timeout=30)
                get = ("GET", "/api/products", None, {})
                assert (await asyncio.to_thread(_request, conn, *get))[0] == 200
                frozen.set()  # the server stops answering, its connections stay open
                status, _headers, _ = await asyncio.to_thread(_request, conn, *get)
                assert status == 503
                frozen.clear()
                assert (await asyncio.to_thread(_request, conn, *get))[0] == 200
                conn.close()


def test_an_unexpected_error_is_one_500_and_the_connection_stays_usable(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    config = server_config(
        app, host="127.0.0.1", port=free_port(), log_level="warning", loop="asyncio"
    )
    with (
        serve_config_in_thread(config) as base,
        caplog.at_level(logging.ERROR),
    ):
        address = urlsplit(base)
        conn = http.client.HTTPConnection(address.hostname or "", address.port, timeout=20)
        for _ in range(3):
            status, _headers, raw = _request(conn, "GET", "/boom", None, {})
            assert status == 500
            assert json.loads(raw)["type"] == "internal-error"
        assert _request(conn, "GET", "/healthz", None, {})[0] == 200
        conn.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.name for r in errors] == ["cryptocheckout.http"] * 3  # nothing from uvicorn
    assert len([r for r in errors if r.exc_info]) == 1

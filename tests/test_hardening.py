"""Hardening of the HTTP surface: admin sign-in, headers, docs offline, metrics, log lines."""

from __future__ import annotations

import logging
import sys

import httpx
import pytest
from pydantic import SecretStr

from cryptocheckout.app import create_app
from cryptocheckout.config import ConfigurationError, Mode, Settings
from cryptocheckout.kit.logsafe import SafeFormatter, escape_control
from cryptocheckout.kit.ratelimit import FailureLimiter, address_key
from cryptocheckout.kit.serving import server_config
from tests.conftest import ADMIN_TOKEN
from tests.support.servers import free_port, serve_config_in_thread

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


# Item: a weak admin token is refused outside demo and test mode.
def _production(**values: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        nowpayments_api_key="a-real-looking-key",
        nowpayments_ipn_secret="a-real-looking-secret",
        **values,  # type: ignore[arg-type]
    )


def test_a_short_admin_token_stops_start_up_naming_it() -> None:
    with pytest.raises(ConfigurationError, match="ADMIN_TOKEN"):
        _production(admin_token="abc").require("admin_token")
    with pytest.raises(ConfigurationError, match="ADMIN_TOKEN"):
        _production(admin_token="x" * 31).require("admin_token")
    _production(admin_token="x" * 32).require("admin_token")
    demo = _production(admin_token="abc")
    demo.mode = Mode.DEMO
    demo.require("admin_token")


# Repeated admin 401s from one address end in 429 with Retry-After.
async def test_repeated_admin_failures_are_refused_with_429(client: httpx.AsyncClient) -> None:
    wrong = {"Authorization": "Bearer not-the-token"}
    statuses = [(await client.get("/api/admin/jobs", headers=wrong)).status_code for _ in range(12)]
    assert statuses[:10] == [401] * 10
    assert statuses[10:] == [429, 429]
    refused = await client.get("/api/admin/jobs", headers=ADMIN)
    # Refused before the token is compared: the right token cannot be found by guessing on.
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["content-type"] == "application/problem+json"


def test_failure_limiter_refills_and_forgets() -> None:
    now = [0.0]
    limiter = FailureLimiter(burst=3, refill_seconds=10, max_keys=2, clock=lambda: now[0])
    for _ in range(3):
        assert limiter.retry_after("a") == 0
        limiter.failed("a")
    assert limiter.retry_after("a") == 10
    now[0] = 4.0
    assert limiter.retry_after("a") == 6
    now[0] = 10.0
    assert limiter.retry_after("a") == 0  # one failure's worth came back
    limiter.failed("b")
    limiter.failed("c")  # at most two addresses remembered: "a" goes
    assert limiter.retry_after("a") == 0
    limiter.failed("a")
    assert limiter.retry_after("a") == 0


def test_an_ipv6_client_counts_as_its_64_network() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::2")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("testclient") == "testclient"


# Item: log forging.
async def test_a_newline_in_the_path_cannot_forge_an_access_log_line(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="cryptocheckout.access"):
        await client.get("/api/x%0A2026-01-01 INFO cryptocheckout.access: GET /forged 200%0D%1B[2J")
    lines = [r.getMessage() for r in caplog.records if r.name == "cryptocheckout.access"]
    assert len(lines) == 1
    assert "\n" not in lines[0] and "\r" not in lines[0] and "\x1b" not in lines[0]
    assert "\\n2026-01-01 INFO" in lines[0]


def test_the_formatter_keeps_every_record_on_its_own_line() -> None:
    formatter = SafeFormatter("%(levelname)s %(name)s: %(message)s")
    try:
        raise ValueError("bad\nERROR forged: line")
    except ValueError:
        exc_info = sys.exc_info()
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "got %s", ("a\nb",), exc_info)
    lines = formatter.format(record).split("\n")
    assert lines[0] == "ERROR x: got a\\nb"
    assert all(line.startswith("    ") for line in lines[1:])
    assert escape_control("\u2028\x7f\t") == "\\x2028\\x7f\\t"


# Item: response headers, offline docs, metrics token, no server banner.
async def test_every_response_says_nosniff_and_secrets_are_not_cached(
    client: httpx.AsyncClient, admin: object
) -> None:
    products = await client.get("/api/products")
    assert products.headers["x-content-type-options"] == "nosniff"
    assert "no-store" not in products.headers.get("cache-control", "")
    for response in [
        await client.get("/api/orders/00000000-0000-4000-8000-000000000000?token=x"),
        await client.post("/api/orders", json={"email": "a@example.com", "items": []}),
        await client.get("/api/admin/jobs", headers=ADMIN),
        await client.get("/api/admin/jobs"),
    ]:
        assert response.headers["cache-control"] == "no-store", response.request.url
        assert response.headers["x-content-type-options"] == "nosniff"
    missing = await client.get("/nothing-here")
    assert missing.headers["x-content-type-options"] == "nosniff"


async def test_docs_are_served_with_their_assets_from_the_package(
    client: httpx.AsyncClient,
) -> None:
    import re

    for page in ("/docs", "/redoc"):
        html = (await client.get(page)).text
        assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
        assert assets, page
        for asset in assets:
            assert asset.startswith("/"), f"{page} loads {asset} from elsewhere"
            loaded = await client.get(asset)
            assert loaded.status_code == 200 and len(loaded.content) > 10_000, asset


async def test_metrics_need_the_metrics_token_when_it_is_set(settings: Settings) -> None:
    guarded = settings.model_copy(update={"metrics_token": SecretStr("m" * 40)})
    for app_settings, open_ in ((settings, True), (guarded, False)):
        app = create_app(app_settings)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as c:
            anonymous = await c.get("/metrics")
            assert anonymous.status_code == (200 if open_ else 401)
            if not open_:
                wrong = await c.get("/metrics", headers={"Authorization": "Bearer nope"})
                assert wrong.status_code == 401
                right = await c.get("/metrics", headers={"Authorization": f"Bearer {'m' * 40}"})
                assert right.status_code == 200
                assert "# TYPE cryptocheckout_ipn_commits_total counter" in right.text


def test_the_server_does_not_announce_itself(settings: Settings) -> None:
    config = server_config(
        create_app(settings), host="127.0.0.1", port=free_port(), log_level="warning"
    )
    with serve_config_in_thread(config) as base:
        response = httpx.get(f"{base}/healthz")
    assert response.status_code == 200
    assert "server" not in response.headers
    assert response.headers["x-content-type-options"] == "nosniff"

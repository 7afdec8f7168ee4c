"""JWT auth, injected faults, the request log, settings and start-up from the environment."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from cryptocheckout.sandbox import SandboxConfig
from cryptocheckout.sandbox.config import SandboxConfigError
from tests.nowpayments.conftest import IpnReceiver, SandboxHandle


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_payment_list_needs_a_jwt(sandbox: SandboxHandle) -> None:
    response = sandbox.api.get("/v1/payment/")
    assert response.status_code == 401
    assert response.json()["code"] == "AUTH_REQUIRED"
    bad = sandbox.api.get("/v1/payment/", headers=bearer("not.a.jwt"))
    assert bad.status_code == 401 and bad.json()["code"] == "AUTH_REQUIRED"
    ok = sandbox.api.get("/v1/payment/", headers=bearer(sandbox.token()))
    assert ok.status_code == 200
    assert ok.json() == {"data": [], "limit": 10, "page": 0, "pagesCount": 0, "total": 0}


def test_a_jwt_alone_is_not_enough(sandbox: SandboxHandle) -> None:
    response = sandbox.control.get("/v1/payment/", headers=bearer(sandbox.token()))
    assert response.status_code == 403
    assert response.json()["code"] == "INVALID_API_KEY"


def test_payment_list_pages_filters_and_sorts(sandbox: SandboxHandle) -> None:
    invoice = sandbox.create_invoice()
    direct = [sandbox.create_payment(price_amount=amount) for amount in (30, 10, 20)]
    on_invoice = sandbox.api.post(
        "/v1/invoice-payment", json={"iid": invoice["id"], "pay_currency": "eth"}
    ).json()
    headers = bearer(sandbox.token())

    def listing(**params: Any) -> dict[str, Any]:
        response = sandbox.api.get("/v1/payment/", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

    first = listing(limit=3, page=0)
    assert first["total"] == 4 and first["pagesCount"] == 2 and first["limit"] == 3
    assert [p["payment_id"] for p in first["data"]] == [int(p["payment_id"]) for p in direct]
    second = listing(limit=3, page=1)
    assert [p["payment_id"] for p in second["data"]] == [int(on_invoice["payment_id"])]
    assert all(isinstance(p["payment_id"], int) for p in first["data"])
    by_price = listing(sortBy="price_amount", orderBy="desc", limit=2)
    assert [p["price_amount"] for p in by_price["data"]] == [30, 25]
    filtered = listing(invoiceId=invoice["id"])
    assert [p["invoice_id"] for p in filtered["data"]] == [int(invoice["id"])]
    assert listing(dateFrom="2000-01-01", dateTo="2999-12-31")["total"] == 4
    assert listing(dateTo="2000-01-01")["total"] == 0
    assert listing(dateFrom="2999-01-01T00:00:00Z")["total"] == 0
    # The list is also served without the trailing slash.
    plain = sandbox.api.get("/v1/payment", headers=headers)
    assert plain.status_code == 200 and plain.json()["total"] == 4


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "ten"},
        {"page": "-1"},
        {"sortBy": "secret_column"},
        {"orderBy": "sideways"},
        {"dateFrom": "yesterday"},
        {"invoiceId": "abc"},
    ],
)
def test_payment_list_rejects_bad_parameters(
    sandbox: SandboxHandle, params: dict[str, str]
) -> None:
    response = sandbox.api.get("/v1/payment/", params=params, headers=bearer(sandbox.token()))
    assert response.status_code == 400
    assert response.json()["code"] == "INVALID_REQUEST_PARAMS"


def test_the_status_call_can_be_made_to_demand_a_jwt(sandbox: SandboxHandle) -> None:
    created = sandbox.create_payment()
    path = f"/v1/payment/{created['payment_id']}"
    assert sandbox.api.get(path).status_code == 200
    sandbox.settings(status_requires_jwt=True)
    refused = sandbox.api.get(path)
    assert refused.status_code == 401 and refused.json()["code"] == "AUTH_REQUIRED"
    assert sandbox.api.get(path, headers=bearer(sandbox.token())).status_code == 200


def test_jwts_expire(sandbox: SandboxHandle) -> None:
    sandbox.settings(jwt_ttl=0.15)
    token = sandbox.token()
    assert sandbox.api.get("/v1/payment/", headers=bearer(token)).status_code == 200
    time.sleep(0.2)
    expired = sandbox.api.get("/v1/payment/", headers=bearer(token))
    assert expired.status_code == 401 and expired.json()["code"] == "AUTH_REQUIRED"
    assert sandbox.api.get("/v1/payment/", headers=bearer(sandbox.token())).status_code == 200


def test_configured_credentials_are_checked(sandbox_factory: Callable[..., SandboxHandle]) -> None:
    sandbox = sandbox_factory(email="shop@example.com", password="right-password")
    wrong = sandbox.api.post("/v1/auth", json={"email": "shop@example.com", "password": "nope"})
    assert wrong.status_code == 401
    assert sandbox.token("shop@example.com", "right-password")
    for body in ({}, {"email": "shop@example.com"}, {"email": "", "password": "x"}):
        response = sandbox.api.post("/v1/auth", json=body)
        assert response.status_code == 400
        assert response.json()["code"] == "INVALID_REQUEST_PARAMS"


def test_a_token_from_another_sandbox_is_refused(
    sandbox: SandboxHandle, sandbox_factory: Callable[..., SandboxHandle]
) -> None:
    foreign = sandbox_factory().token()
    assert sandbox.api.get("/v1/payment/", headers=bearer(foreign)).status_code == 401


def test_faults_answer_the_next_calls_with_an_error_and_retry_after(
    sandbox: SandboxHandle,
) -> None:
    fault = sandbox.fault("/v1/payment", 429, method="POST", count=2, retry_after=1)
    assert fault["remaining"] == 2
    body = {"price_amount": 25, "price_currency": "usd", "pay_currency": "btc"}
    for _ in range(2):
        response = sandbox.api.post("/v1/payment", json=body)
        assert response.status_code == 429
        assert response.headers["retry-after"] == "1"
        assert response.json()["code"] == "TOO_MANY_REQUESTS"
        assert response.headers["x-request-id"]
    assert sandbox.api.post("/v1/payment", json=body).status_code == 201
    assert sandbox._ok(sandbox.control.get("/sandbox/faults"))["items"] == []


def test_faults_match_route_templates_and_prefixes(sandbox: SandboxHandle) -> None:
    created = sandbox.create_payment()
    sandbox.fault("/v1/payment/{payment_id}", 500)
    assert sandbox.api.get(f"/v1/payment/{created['payment_id']}").status_code == 500
    assert sandbox.api.get(f"/v1/payment/{created['payment_id']}").status_code == 200
    sandbox.fault("/v1/*", 503, count=2)
    assert sandbox.control.get("/v1/status").status_code == 503
    assert sandbox.api.get("/v1/currencies").status_code == 503
    assert sandbox.control.get("/v1/status").status_code == 200


def test_faults_can_answer_like_a_cdn_or_only_be_slow(sandbox: SandboxHandle) -> None:
    sandbox.fault("/v1/status", 502, html=True)
    page = sandbox.control.get("/v1/status")
    assert page.status_code == 502 and page.headers["content-type"].startswith("text/html")
    sandbox.fault("/v1/status", delay=0.15)
    started = time.monotonic()
    assert sandbox.control.get("/v1/status").status_code == 200
    assert time.monotonic() - started >= 0.12
    sandbox.fault("/v1/status", 503, count=5)
    assert sandbox.control.delete("/sandbox/faults").status_code == 200
    assert sandbox.control.get("/v1/status").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"path": "no-slash", "status": 500},
        {"path": "/v1/status"},
        {"path": "/v1/status", "status": 200},
        {"path": "/v1/status", "status": 500, "count": 0},
        {"path": "/v1/status", "status": "500"},
        {"path": "/v1/status", "status": 500, "html": "yes"},
    ],
)
def test_bad_fault_requests_are_refused(sandbox: SandboxHandle, body: dict[str, object]) -> None:
    response = sandbox.control.post("/sandbox/faults", json=body)
    assert response.status_code == 400


def test_the_request_log_keeps_calls_but_never_the_key_or_password(
    sandbox: SandboxHandle,
) -> None:
    sandbox.create_payment()
    sandbox.control.get("/v1/currencies", headers={"x-api-key": "wrong"})
    sandbox.token(password="hunter2-password")
    items = sandbox._ok(sandbox.control.get("/sandbox/requests"))["items"]
    assert [(i["method"], i["path"], i["status"], i["api_key"]) for i in items] == [
        ("POST", "/v1/payment", 201, "valid"),
        ("GET", "/v1/currencies", 403, "invalid"),
        ("POST", "/v1/auth", 200, "valid"),
    ]
    assert items[0]["content_type"] == "application/json"
    assert '"pay_currency":"btc"' in items[0]["body"].replace(" ", "")
    assert items[2]["body"] is None
    log = sandbox.control.get("/sandbox/requests").text
    assert sandbox.api_key not in log and "hunter2-password" not in log


def test_secrets_never_reach_the_logs(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ipn_receiver.fail_next(1)
    created = sandbox.create_payment(ipn_callback_url=ipn_receiver.url, case="success")
    sandbox.notifications(created["payment_id"], min_count=5, settled=True)
    sandbox.control.get("/v1/currencies", headers={"x-api-key": "wrong"})
    assert caplog.records, "the sandbox logs its deliveries"
    assert sandbox.api_key not in caplog.text
    assert sandbox.ipn_secret not in caplog.text
    assert sandbox.ipn_secret not in repr(sandbox.config)
    assert sandbox.api_key not in repr(sandbox.config)


def test_settings_round_trip_and_reset(sandbox: SandboxHandle) -> None:
    changed = sandbox.settings(
        step_delay=0.5, resend_attempts=1, chaos={"duplicates": 2, "reorder": True}
    )
    assert changed["step_delay"] == 0.5 and changed["resend_attempts"] == 1
    assert changed["chaos"] == {"duplicates": 2, "delay": 0, "reorder": True}
    sandbox.create_payment()
    sandbox.reset()
    settings = sandbox._ok(sandbox.control.get("/sandbox/settings"))
    assert settings["step_delay"] == sandbox.config.step_delay
    assert settings["chaos"] == {"duplicates": 0, "delay": 0, "reorder": False}
    assert sandbox._ok(sandbox.control.get("/sandbox/payments"))["items"] == []


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("PATCH", "/sandbox/settings", {"step_delay": -1}),
        ("PATCH", "/sandbox/settings", {"resend_attempts": 1.5}),
        ("PATCH", "/sandbox/settings", {"status_requires_jwt": "yes"}),
        ("PATCH", "/sandbox/settings", {"chaos": [1]}),
        ("PATCH", "/sandbox/settings", {"chaos": {"duplicates": 99}}),
        ("POST", "/sandbox/payments/{id}/drive", {"outcome": "teleported"}),
        ("POST", "/sandbox/payments/{id}/drive", {}),
        ("POST", "/sandbox/payments/{id}/status", {"status": "paid"}),
        ("POST", "/sandbox/payments/{id}/status", {"status": "finished", "actually_paid": "x"}),
        ("POST", "/sandbox/payments/{id}/repeat-deposit", {"status": "expired"}),
        ("PATCH", "/sandbox/payments/{id}/chaos", {"delay": "soon"}),
    ],
)
def test_bad_control_requests_are_400(
    sandbox: SandboxHandle, method: str, path: str, body: dict[str, object]
) -> None:
    created = sandbox.create_payment()
    response = sandbox.control.request(
        method, path.replace("{id}", created["payment_id"]), json=body
    )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "INVALID_REQUEST_PARAMS"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/sandbox/payments/123"),
        ("GET", "/sandbox/payments/abc"),
        ("POST", "/sandbox/payments/123/drive"),
        ("POST", "/sandbox/payments/123/resend"),
        ("GET", "/sandbox/invoices/123"),
        ("POST", "/sandbox/invoices/123/pay"),
        ("GET", "/sandbox/notifications/999"),
        ("GET", "/sandbox/nothing"),
    ],
)
def test_unknown_control_targets_are_404(sandbox: SandboxHandle, method: str, path: str) -> None:
    response = sandbox.control.request(method, path, json={"outcome": "finished"})
    assert response.status_code == 404
    assert response.json()["code"] == "NOT_FOUND"


def test_waiting_for_notifications_gives_up_at_the_timeout(sandbox: SandboxHandle) -> None:
    started = time.monotonic()
    answer = sandbox.control.get(
        "/sandbox/notifications", params={"min_count": 1, "timeout": 0.2}
    ).json()
    assert answer == {"items": [], "complete": False}
    assert 0.15 <= time.monotonic() - started < 2


def test_an_invoice_can_be_paid_through_the_control_api(
    sandbox: SandboxHandle, ipn_receiver: IpnReceiver
) -> None:
    invoice = sandbox.create_invoice(ipn_callback_url=ipn_receiver.url)
    response = sandbox.control.post(
        f"/sandbox/invoices/{invoice['id']}/pay",
        json={"pay_currency": "usdttrc20", "outcome": "partially_paid"},
    )
    assert response.status_code == 201
    payment = response.json()
    assert payment["invoice_id"] == int(invoice["id"])
    sandbox.payment(payment["payment_id"], wait_for_status="partially_paid")
    items = sandbox._ok(sandbox.control.get("/sandbox/invoices"))["items"]
    assert items[0]["payment_ids"] == [payment["payment_id"]]
    filtered = sandbox._ok(
        sandbox.control.get("/sandbox/payments", params={"invoice_id": invoice["id"]})
    )
    assert [p["payment_id"] for p in filtered["items"]] == [payment["payment_id"]]


def test_config_from_env_reads_the_shops_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOWPAYMENTS_API_KEY", "env-api-key-1234")
    monkeypatch.setenv("NOWPAYMENTS_IPN_SECRET", "env-ipn-secret-5678")
    config = SandboxConfig.from_env(public_url="http://127.0.0.1:8100/", env_file=None)
    assert config.api_key == "env-api-key-1234"
    assert config.ipn_secret == "env-ipn-secret-5678"
    assert config.public_url == "http://127.0.0.1:8100"
    assert "env-api-key-1234" not in repr(config) and "env-ipn-secret" not in repr(config)


def test_config_from_env_file_is_overridden_by_the_environment(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text(
        "NOWPAYMENTS_API_KEY=file-api-key-1234\nNOWPAYMENTS_IPN_SECRET=file-ipn-secret-5678\n"
        "DATABASE_URL=not a url the sandbox would ever read\n"
    )
    from_file = SandboxConfig.from_env("http://unused", environ={}, env_file=env_file)
    assert (from_file.api_key, from_file.ipn_secret) == (
        "file-api-key-1234",
        "file-ipn-secret-5678",
    )
    environ = {"NOWPAYMENTS_API_KEY": "env-api-key-9999"}
    mixed = SandboxConfig.from_env("http://unused", environ=environ, env_file=env_file)
    assert (mixed.api_key, mixed.ipn_secret) == ("env-api-key-9999", "file-ipn-secret-5678")


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({}, "NOWPAYMENTS_API_KEY, NOWPAYMENTS_IPN_SECRET"),
        (
            {"NOWPAYMENTS_API_KEY": "real-key-1234", "NOWPAYMENTS_IPN_SECRET": "changeme"},
            "NOWPAYMENTS_IPN_SECRET",
        ),
        (
            {"NOWPAYMENTS_API_KEY": " ", "NOWPAYMENTS_IPN_SECRET": "real-secret-5678"},
            "NOWPAYMENTS_API_KEY",
        ),
    ],
)
def test_config_from_env_names_a_missing_or_placeholder_variable(
    environ: dict[str, str], named: str
) -> None:
    with pytest.raises(SandboxConfigError) as caught:
        SandboxConfig.from_env("http://unused", environ=environ, env_file=None)
    assert str(caught.value).startswith(f"missing or placeholder setting: {named} ")


def test_the_sandbox_command_stops_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOWPAYMENTS_IPN_SECRET", raising=False)
    monkeypatch.setenv("NOWPAYMENTS_API_KEY", "env-api-key-1234")
    monkeypatch.chdir(Path(__file__).parent)  # no .env here
    result = subprocess.run(
        [sys.executable, "-m", "cryptocheckout.cli", "sandbox", "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "NOWPAYMENTS_IPN_SECRET" in result.stderr
    assert "env-api-key-1234" not in result.stderr


def test_a_sandbox_built_from_env_accepts_that_key(
    monkeypatch: pytest.MonkeyPatch,
    sandbox_factory: Callable[..., SandboxHandle],
) -> None:
    monkeypatch.setenv("NOWPAYMENTS_API_KEY", "env-api-key-1234")
    monkeypatch.setenv("NOWPAYMENTS_IPN_SECRET", "env-ipn-secret-5678")
    env = SandboxConfig.from_env(public_url="http://unused", env_file=None)
    sandbox = sandbox_factory(api_key=env.api_key, ipn_secret=env.ipn_secret)
    headers = {"x-api-key": "env-api-key-1234"}
    assert httpx.get(f"{sandbox.base_url}/v1/currencies", headers=headers).status_code == 200


def test_a_seed_makes_ids_and_addresses_repeat(
    sandbox_factory: Callable[..., SandboxHandle],
) -> None:
    first = sandbox_factory(seed=7).create_payment()
    second = sandbox_factory(seed=7).create_payment()
    assert first["payment_id"] == second["payment_id"]
    assert first["pay_address"] == second["pay_address"]

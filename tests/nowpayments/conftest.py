"""Fixtures for code that talks to NOWPayments: the offline sandbox and an IPN receiver.

Both are real HTTP servers on loopback (uvicorn in a thread, see ``tests/support/servers``),
started once per session and reset before each test, so a test sees an empty sandbox and
an empty receiver and pays no start-up cost.

* ``sandbox``: a :class:`SandboxHandle` (``.base_url``, ``.api_key``, ``.ipn_secret``,
  ``.config``, ``.api`` - an httpx client sending the API key, ``.control`` - a plain httpx
  client, and helpers for the control API). Steps are 10 ms apart and resends 30 ms.
* ``ipn_receiver``: an :class:`IpnReceiver` (``.url``, ``.deliveries``, ``.wait_for(n)``,
  ``.fail_next(n, status)``, ``.delay``) recording every POST it gets.
* ``sandbox_factory``: starts a separate sandbox with other settings (JWT lifetime,
  credentials...); it stops at the end of the test.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest

from cryptocheckout.nowpayments.signature import SIGNATURE_HEADER
from cryptocheckout.sandbox import SandboxConfig, create_sandbox_app
from tests.support.servers import free_port, serve_in_thread

SANDBOX_API_KEY = "sandbox-test-api-key-3f9a"
SANDBOX_IPN_SECRET = "sandbox-test-ipn-secret-7c2e"
STEP_DELAY = 0.01
RESEND_INTERVAL = 0.03
RESEND_ATTEMPTS = 3
WAIT = 5.0
MERCHANT_EMAIL = "merchant@example.com"
MERCHANT_PASSWORD = "sandbox-password"


@dataclass(frozen=True)
class Delivery:
    """One POST the receiver got, and what it answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    answered: int
    received_at: float

    @property
    def signature(self) -> str | None:
        return self.headers.get(SIGNATURE_HEADER)

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def status(self) -> str:
        return str(self.json()["payment_status"])


@dataclass
class IpnReceiver:
    """A tiny ASGI app standing in for the shop's IPN endpoint."""

    base_url: str = ""
    # Seconds to wait before answering each POST (a slow shop).
    delay: float = 0.0
    _deliveries: list[Delivery] = field(default_factory=list)
    _failures: list[int] = field(default_factory=list)
    _changed: threading.Condition = field(default_factory=threading.Condition)
    _generation: int = 0

    @property
    def url(self) -> str:
        """Where to send IPNs; a new path for every test (see :meth:`clear`)."""
        return f"{self.base_url}/ipn/{self._generation}"

    @property
    def deliveries(self) -> list[Delivery]:
        with self._changed:
            return list(self._deliveries)

    @property
    def accepted(self) -> list[Delivery]:
        """Deliveries answered with 2xx."""
        return [d for d in self.deliveries if 200 <= d.answered < 300]

    def fail_next(self, count: int, status: int = 500) -> None:
        """Answer the next ``count`` POSTs with ``status`` instead of 200."""
        with self._changed:
            self._failures.extend([status] * count)

    def clear(self) -> None:
        """Forget everything. The URL changes too, so a POST to an earlier test's URL that
        lands late (the sandbox was reset while it was on the wire) is answered but not kept.
        """
        with self._changed:
            self._generation += 1
            self._deliveries.clear()
            self._failures.clear()
            self.delay = 0.0

    def wait_for(self, count: int, timeout: float = WAIT) -> list[Delivery]:
        """Block until at least ``count`` POSTs arrived; fail the test if they do not."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._deliveries) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    statuses = [d.status for d in self._deliveries]
                    raise AssertionError(f"expected {count} deliveries, got {statuses}")
                self._changed.wait(remaining)
            return list(self._deliveries)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        with self._changed:
            if scope["path"] != f"/ipn/{self._generation}":
                status, delay = 200, 0.0
            else:
                status = self._failures.pop(0) if self._failures else 200
                delay = self.delay
                # Kept on arrival, before any delay, so what a test sees is what was sent.
                self._deliveries.append(
                    Delivery(
                        path=scope["path"],
                        headers={k.decode().lower(): v.decode() for k, v in scope["headers"]},
                        body=body,
                        answered=status,
                        received_at=time.monotonic(),
                    )
                )
            self._changed.notify_all()
        if delay:
            await asyncio.sleep(delay)
        answer = b'{"ok":true}' if status < 400 else b'{"error":"receiver told to fail"}'
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": answer})


@dataclass
class SandboxHandle:
    """A running sandbox and shortcuts for its control API."""

    base_url: str
    config: SandboxConfig
    api: httpx.Client
    control: httpx.Client

    @property
    def api_key(self) -> str:
        return self.config.api_key

    @property
    def ipn_secret(self) -> str:
        return self.config.ipn_secret

    def close(self) -> None:
        self.api.close()
        self.control.close()

    def reset(self) -> None:
        self.control.post("/sandbox/reset").raise_for_status()

    def settings(self, **changes: Any) -> dict[str, Any]:
        """Change runtime settings: step_delay, resend_attempts, resend_interval, ipn_timeout,
        jwt_ttl, status_requires_jwt, amounts_as_strings, chaos={duplicates, delay, reorder}.
        """
        return self._ok(self.control.patch("/sandbox/settings", json=changes))

    def create_payment(self, **fields: Any) -> dict[str, Any]:
        """``POST /v1/payment`` with defaults for the required fields; returns the 201 body."""
        body = {"price_amount": 25, "price_currency": "usd", "pay_currency": "btc", **fields}
        response = self.api.post("/v1/payment", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def create_invoice(self, **fields: Any) -> dict[str, Any]:
        body = {"price_amount": 25, "price_currency": "usd", **fields}
        response = self.api.post("/v1/invoice", json=body)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def payment(self, payment_id: int | str, wait_for_status: str | None = None) -> dict[str, Any]:
        """The control view of a payment; optionally once it reaches ``wait_for_status``."""
        params = {"wait_for_status": wait_for_status} if wait_for_status else {}
        view = self._ok(self.control.get(f"/sandbox/payments/{payment_id}", params=params))
        if wait_for_status:
            assert view["payment_status"] == wait_for_status, view["history"]
        return view

    def drive(self, payment_id: int | str, outcome: str, **extra: Any) -> list[str]:
        """Walk a payment to an outcome (finished, partially_paid, overpaid, expired, failed,
        late_finished, refunded); returns the statuses still to come.
        """
        body = {"outcome": outcome, **extra}
        answer = self._ok(self.control.post(f"/sandbox/payments/{payment_id}/drive", json=body))
        return list(answer["steps"])

    def set_status(self, payment_id: int | str, status: str, **extra: Any) -> dict[str, Any]:
        body = {"status": status, **extra}
        return self._ok(self.control.post(f"/sandbox/payments/{payment_id}/status", json=body))

    def notifications(
        self,
        payment_id: int | str | None = None,
        *,
        min_count: int = 0,
        settled: bool = False,
        timeout: float = WAIT,
        **filters: Any,
    ) -> list[dict[str, Any]]:
        """Notifications sent (oldest first).

        Waits until ``min_count`` exist; with ``settled`` also until each is delivered or
        has given up and the payment(s) have no statuses still to come, after which the
        receiver has seen everything it is going to see.
        """
        params: dict[str, Any] = {"min_count": min_count, "timeout": timeout, **filters}
        if payment_id is not None:
            params["payment_id"] = payment_id
        if settled:
            params["settled"] = "true"
        answer = self._ok(self.control.get("/sandbox/notifications", params=params))
        if min_count or settled:
            assert answer["complete"], [(n["payment_status"], n["state"]) for n in answer["items"]]
        return list(answer["items"])

    def fault(self, path: str, status: int | None = None, **options: Any) -> dict[str, Any]:
        """Inject a fault: options are count, method, retry_after, delay, html."""
        body = {"path": path, "status": status, **options}
        return self._ok(self.control.post("/sandbox/faults", json=body))

    def token(self, email: str = MERCHANT_EMAIL, password: str = MERCHANT_PASSWORD) -> str:
        """A JWT from ``POST /v1/auth`` (any non-empty pair unless the config names one)."""
        response = self.api.post("/v1/auth", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        return str(response.json()["token"])

    @staticmethod
    def _ok(response: httpx.Response) -> dict[str, Any]:
        """The JSON object of a successful answer; fails the test on any other."""
        assert response.is_success, f"{response.status_code} {response.text}"
        body = response.json()
        assert isinstance(body, dict), body
        return body


def _config(port: int, **overrides: Any) -> SandboxConfig:
    config = SandboxConfig(
        api_key=SANDBOX_API_KEY,
        ipn_secret=SANDBOX_IPN_SECRET,
        public_url=f"http://127.0.0.1:{port}",
        step_delay=STEP_DELAY,
        resend_attempts=RESEND_ATTEMPTS,
        resend_interval=RESEND_INTERVAL,
    )
    return replace(config, **overrides)


def _start(stack: ExitStack, **overrides: Any) -> SandboxHandle:
    port = free_port()
    config = _config(port, **overrides)
    base_url = stack.enter_context(serve_in_thread(create_sandbox_app(config), port=port))
    handle = SandboxHandle(
        base_url=base_url,
        config=config,
        api=httpx.Client(base_url=base_url, headers={"x-api-key": config.api_key}),
        control=httpx.Client(base_url=base_url, timeout=30),
    )
    stack.callback(handle.close)
    return handle


@pytest.fixture(scope="session")
def _sandbox_server() -> Iterator[SandboxHandle]:
    with ExitStack() as stack:
        yield _start(stack)


@pytest.fixture
def sandbox(_sandbox_server: SandboxHandle) -> Iterator[SandboxHandle]:
    _sandbox_server.reset()
    yield _sandbox_server
    # Stop resends and held notifications before the next test's receiver is cleared.
    _sandbox_server.reset()


@pytest.fixture
def sandbox_factory() -> Iterator[Callable[..., SandboxHandle]]:
    """Start a sandbox of its own with ``SandboxConfig`` fields overridden."""
    with ExitStack() as stack:
        yield lambda **overrides: _start(stack, **overrides)


@pytest.fixture(scope="session")
def _ipn_receiver_server() -> Iterator[IpnReceiver]:
    receiver = IpnReceiver()
    with serve_in_thread(receiver) as base_url:
        receiver.base_url = base_url
        yield receiver


@pytest.fixture
def ipn_receiver(_ipn_receiver_server: IpnReceiver) -> IpnReceiver:
    _ipn_receiver_server.clear()
    return _ipn_receiver_server

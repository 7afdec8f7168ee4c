"""The production topology on PostgreSQL: two API processes and two worker processes against
one database, connected directly and through a PgBouncer in transaction mode (`route`).

Orders and payments against the offline sandbox, a storm of identical notifications split
across both API processes, fulfilment and the admin lists: each effect once, no error in any
process's log. Also `serve --workers 2`.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cryptocheckout.catalogue.models import LicenceKey
from cryptocheckout.kit.jobs_models import Job
from cryptocheckout.payments.models import StatusChange
from cryptocheckout.payments.state_machine import FULFIL_ORDER_JOB
from cryptocheckout.sandbox import SandboxConfig, create_sandbox_app
from cryptocheckout.webhooks.models import WebhookLog
from tests.conftest import ADMIN_TOKEN, Route
from tests.support.ipn import ipn_payload, signed
from tests.support.servers import free_port, serve_in_thread

pytestmark = [
    pytest.mark.parametrize("dialect", ["postgresql"], indirect=True),
    pytest.mark.slow,
]

SECRET = "test-ipn-secret"
API_KEY = "test-api-key"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
CLI = [sys.executable, "-m", "cryptocheckout"]
Sessions = async_sessionmaker[AsyncSession]


def _env(route: Route, sandbox_url: str, callback_base: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "NOWPAYMENTS_"))},
        **route.env(),
        "CRYPTOCHECKOUT_MODE": "test",
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "NOWPAYMENTS_API_KEY": API_KEY,
        "NOWPAYMENTS_IPN_SECRET": SECRET,
        "NOWPAYMENTS_BASE": sandbox_url,
        "NOWPAYMENTS_CALLBACK_URL": f"{callback_base}/api/webhooks/nowpayments",
        "PUBLIC_BASE_URL": callback_base,
        "WORKER_POLL_SECONDS": "0.05",
    }


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen([*CLI, *args], env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{base} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{base} not ready: {log.read_text()[-2000:]}")


def _errors_in(logs: list[Path]) -> list[str]:
    return [
        f"{log.name}: {line}"
        for log in logs
        for line in log.read_text(errors="replace").splitlines()
        if " ERROR " in line or " CRITICAL " in line or "Traceback" in line or "ERROR:" in line
    ]


async def _count(sessionmaker: Sessions, model: Any, *where: Any) -> int:
    async with sessionmaker() as session:
        query = select(func.count()).select_from(model).where(*where)
        return int((await session.execute(query)).scalar_one())


async def _wait_status(client: httpx.AsyncClient, order: dict[str, Any], status: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        view = await client.get(
            f"/api/orders/{order['id']}", headers={"X-Order-Token": order["access_token"]}
        )
        assert view.status_code == 200, view.text
        if view.json()["status"] == status:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"order {order['id']} never became {status}")


@pytest.mark.stores_notifications
async def test_two_api_processes_and_two_workers_one_database(
    route: Route, sessionmaker: Sessions, tmp_path: Path
) -> None:
    sandbox_port, port_a, port_b = free_port(), free_port(), free_port()
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    base_a, base_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
    sandbox = SandboxConfig(
        api_key=API_KEY,
        ipn_secret=SECRET,
        public_url=sandbox_url,
        step_delay=0.02,
        resend_attempts=3,
        resend_interval=0.2,
    )
    env = _env(route, sandbox_url, base_a)
    logs = [tmp_path / name for name in ("api-a.log", "api-b.log", "worker-1.log", "worker-2.log")]
    with ExitStack() as stack:
        stack.enter_context(serve_in_thread(create_sandbox_app(sandbox), port=sandbox_port))
        api_a = stack.enter_context(
            process(["serve", "--no-worker", "--port", str(port_a)], env, logs[0])
        )
        api_b = stack.enter_context(
            process(["serve", "--no-worker", "--port", str(port_b)], env, logs[1])
        )
        stack.enter_context(process(["worker"], env, logs[2]))
        stack.enter_context(process(["worker"], env, logs[3]))
        _wait_ready(base_a, api_a, logs[0])
        _wait_ready(base_b, api_b, logs[1])
        async with (
            httpx.AsyncClient(base_url=base_a, timeout=15) as a,
            httpx.AsyncClient(base_url=base_b, timeout=15) as b,
            httpx.AsyncClient(base_url=sandbox_url, timeout=15) as sandbox_client,
        ):
            product = await a.post(
                "/api/admin/products",
                json={"sku": "TOPO-1", "name": "Game", "price": "12.50", "currency": "USD"},
                headers=ADMIN,
            )
            assert product.status_code == 201, product.text
            product_id = product.json()["id"]
            keys = {"keys": [f"TOPO-KEY-{i}" for i in range(6)]}
            added = await b.post(f"/api/admin/products/{product_id}/keys", json=keys, headers=ADMIN)
            assert added.status_code == 201, added.text

            async def order_and_pay(shop: httpx.AsyncClient, other: httpx.AsyncClient) -> Any:
                created = await shop.post(
                    "/api/orders",
                    json={
                        "email": "buyer@example.com",
                        "items": [{"product_id": product_id, "quantity": 2}],
                    },
                )
                assert created.status_code == 201, created.text
                order = created.json()
                paid = await other.post(
                    "/api/payments",
                    json={"order_id": order["id"], "pay_currency": "btc"},
                    headers={"X-Order-Token": order["access_token"]},
                )
                assert paid.status_code == 201, paid.text
                return order, paid.json()

            # One order paid through the sandbox (its notifications reach process A).
            first, first_payment = await order_and_pay(a, b)
            driven = await sandbox_client.post(
                f"/sandbox/payments/{first_payment['external_id']}/drive",
                json={"outcome": "finished"},
            )
            assert driven.status_code == 202, driven.text

            # One paid by a storm of 50 identical notifications, half to each process.
            second, payment = await order_and_pay(b, a)
            body, headers = signed(
                ipn_payload(
                    payment["external_id"],
                    "finished",
                    order_id=second["id"],
                    price_amount=payment["price_amount"],
                    pay_amount=payment["pay_amount"],
                    actually_paid=payment["pay_amount"],
                ),
                SECRET,
            )
            storm = await asyncio.gather(
                *(
                    (a if i % 2 else b).post(
                        "/api/webhooks/nowpayments", content=body, headers=headers
                    )
                    for i in range(50)
                )
            )
            assert [r.status_code for r in storm] == [200] * 50

            await _wait_status(b, first, "fulfilled")
            await _wait_status(a, second, "fulfilled")

            for shop in (a, b):
                listed = await shop.get("/api/admin/payments", headers=ADMIN)
                assert listed.status_code == 200, listed.text
                statuses = {p["id"]: p["status"] for p in listed.json()["items"]}
                assert statuses == {first_payment["id"]: "finished", payment["id"]: "finished"}
                jobs = await shop.get("/api/admin/jobs", headers=ADMIN)
                assert jobs.status_code == 200, jobs.text
                fulfil = [j for j in jobs.json()["items"] if j["kind"] == FULFIL_ORDER_JOB]
                assert sorted(j["status"] for j in fulfil) == ["succeeded", "succeeded"]
                logs_listed = await shop.get("/api/admin/webhook-logs", headers=ADMIN)
                assert logs_listed.status_code == 200, logs_listed.text

    # Each effect once.
    for order in (first, second):
        paid_changes = await _count(
            sessionmaker,
            StatusChange,
            StatusChange.order_id == order["id"],
            StatusChange.to_status == "paid",
        )
        assert paid_changes == 1
        assert await _count(sessionmaker, LicenceKey, LicenceKey.order_id == order["id"]) == 2
    assert await _count(sessionmaker, Job, Job.kind == FULFIL_ORDER_JOB) == 2
    async with sessionmaker() as session:
        stormed = (
            await session.execute(select(WebhookLog).where(WebhookLog.raw_body == body.decode()))
        ).scalar_one()
    assert stormed.deliveries == 50
    assert _errors_in(logs) == []


def test_serve_workers_runs_n_api_processes(route: Route, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    env = _env(route, f"http://127.0.0.1:{free_port()}", base)
    with process(["serve", "--workers", "2", "--port", str(port)], env, log) as proc:
        _wait_ready(base, proc, log)
        deadline = time.monotonic() + 30
        while log.read_text().count("Application startup complete") < 2:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        for _ in range(20):
            with httpx.Client(base_url=base, timeout=10) as client:  # a new connection each
                assert client.get("/api/products").status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    text = log.read_text()
    # Two processes, each with its own job worker (and its own IPN group commit).
    started = re.findall(r"cryptocheckout\.worker: worker (\S+) started", text)
    assert len(set(started)) == 2
    assert _errors_in([log]) == []

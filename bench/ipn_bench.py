"""Benchmark of the NOWPayments IPN endpoint against /healthz, and notification -> paid latency.

Run from the repository root:

    .venv/bin/python bench/ipn_bench.py [--duration S] [--quick]

What it does (every step is bounded in time, everything listens on 127.0.0.1 only):

1. creates a throwaway PostgreSQL database (`cc_bench_<random>` on BENCH_DATABASE_URL, by
   default the local server), migrates it with `cryptocheckout migrate`, and drops it at the
   end, also after an error;
2. seeds a product, licence keys, orders and `waiting` payments, so that the notifications
   name payments the shop knows;
3. starts `cryptocheckout serve --no-worker` as a separate process and waits for /readyz;
4. drives GET /healthz and then POST /api/webhooks/nowpayments (signed bodies as NOWPayments
   sends them, 30 % exact redeliveries of bodies already acknowledged) at 16 and 64
   connections from separate load-generator processes, measuring requests/s, p50, p99,
   errors and the CPU used by the server, the load generator and PostgreSQL; then checks
   that every acknowledged notification is in `webhook_logs` and that redeliveries were
   counted on their rows;
5. starts two `cryptocheckout worker` processes and sends paced `finished` notifications for
   distinct waiting payments, measuring the time from the 200 answer to the order's `paid`;
6. prints a Markdown report and writes it into bench/README.md.

With `--endpoint live` or `--endpoint dead`, a webhook endpoint of the shop's own systems is
configured that answers at once, or accepts connections and never answers (each delivery
waits out its 10 s timeout), so the report shows what order events and a dead endpoint cost
the IPN endpoint and the notification -> paid latency.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import math
import multiprocessing
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from cryptocheckout.catalogue.models import LicenceKey, Product
from cryptocheckout.kit.db import create_engine
from cryptocheckout.kit.encryption import KeyRing, generate_key
from cryptocheckout.kit.jobs_models import Job
from cryptocheckout.nowpayments.signature import (
    SIGNATURE_HEADER,
    canonical_ipn_body,
    parse_ipn_body,
    sign_ipn,
)
from cryptocheckout.orders.models import Order, OrderItem, OrderStatus
from cryptocheckout.outbound.models import WebhookEndpoint
from cryptocheckout.outbound.service import WEBHOOK_DELIVERY_JOB
from cryptocheckout.outbound.signing import new_secret
from cryptocheckout.payments.models import Payment, PaymentKind, PaymentStatus, StatusChange
from cryptocheckout.webhooks.ingest import fingerprint
from cryptocheckout.webhooks.models import WebhookLog, WebhookLogStatus

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
HOST = "127.0.0.1"
IPN_PATH = "/api/webhooks/nowpayments"
HEALTH_PATH = "/healthz"
IPN_SECRET = "bench-ipn-secret-" + "x" * 16
BENCH_KEYS_ENCRYPTION_KEY = generate_key()
REDELIVERY_SHARE = 0.30
PRICE = Decimal("12.50")
PRICE_CURRENCY = "usd"
PAY_CURRENCY = "btc"
# NOWPayments' statuses of one payment, in the order it notifies them.
STATUS_SEQUENCE = ("waiting", "confirming", "confirmed", "sending", "finished")
PAYMENT_ID_BASE = 5_077_000_000
REQUEST_TIMEOUT_SECONDS = 10.0
STARTUP_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
README = Path(__file__).resolve().parent / "README.md"
RESULTS_BEGIN = "<!-- results:begin -->"
RESULTS_END = "<!-- results:end -->"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------
# Seeded data and notification bodies
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeededPayment:
    payment_id: int  # NOWPayments' payment_id, a number in notifications
    order_id: str
    pay_amount: str  # exact decimal text, as stored
    pay_address: str
    purchase_id: int


def seeded_payment(index: int, order_id: uuid.UUID, rng: random.Random) -> SeededPayment:
    pay_amount = Decimal(rng.randrange(15_000, 40_000)) / Decimal(10**8)
    return SeededPayment(
        payment_id=PAYMENT_ID_BASE + index,
        order_id=str(order_id),
        pay_amount=format(pay_amount, "f"),
        pay_address="bc1q" + hashlib.sha256(f"addr{index}".encode()).hexdigest()[:38],
        purchase_id=4_400_000_000 + index,
    )


def ipn_payload(payment: SeededPayment, status: str, updated_at_ms: int) -> dict[str, Any]:
    """A notification with every field of a real NOWPayments IPN for a `/v1/payment` payment."""
    pay_amount = Decimal(payment.pay_amount)
    paid = Decimal(0) if status == "waiting" else pay_amount
    service_fee = (pay_amount * Decimal("0.005")).quantize(Decimal("0.00000001"))
    return {
        "actually_paid": float(paid) if paid else 0,
        "actually_paid_at_fiat": float(PRICE) if paid else 0,
        "fee": {
            "currency": PAY_CURRENCY,
            "depositFee": 0,
            "serviceFee": float(service_fee),
            "withdrawalFee": 0.0000021,
        },
        "invoice_id": None,
        "order_description": f"Order {payment.order_id}",
        "order_id": payment.order_id,
        "outcome_amount": float((paid - service_fee) if paid else 0),
        "outcome_currency": PAY_CURRENCY,
        "parent_payment_id": None,
        "pay_address": payment.pay_address,
        "pay_amount": float(pay_amount),
        "pay_currency": PAY_CURRENCY,
        "payin_extra_id": None,
        "payment_extra_ids": None,
        "payment_id": payment.payment_id,
        "payment_status": status,
        "price_amount": float(PRICE),
        "price_currency": PRICE_CURRENCY,
        "purchase_id": payment.purchase_id,
        "updated_at": updated_at_ms,
    }


@dataclass(frozen=True)
class Notification:
    body: bytes
    signature: str
    fingerprint: str


def make_notification(payload: dict[str, Any], secret: str) -> Notification:
    body = canonical_ipn_body(payload)
    # The fingerprint exactly as the endpoint computes it, from the parsed body.
    return Notification(body, sign_ipn(payload, secret), fingerprint(parse_ipn_body(body)))


# --------------------------------------------------------------------------------------
# Load generator (runs in its own processes)
# --------------------------------------------------------------------------------------


@dataclass
class ClientSpec:
    port: int
    path: str
    concurrency: int
    client: str  # "raw" or "httpx"
    warmup: float
    duration: float
    # IPN only:
    payments: list[SeededPayment] = field(default_factory=list)
    secret: str = IPN_SECRET
    index_start: int = 0
    index_step: int = 1
    pool_size: int = 0
    seed: int = 0
    updated_at_base_ms: int = 0


@dataclass
class ClientResult:
    window_latencies_ms: list[float] = field(default_factory=list)
    window_ok: int = 0
    window_errors: int = 0
    errors_total: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    ok_total: int = 0
    acked_fingerprints: set[str] = field(default_factory=set)
    acked_redeliveries: int = 0
    stored_answers: int = 0
    duplicate_answers: int = 0
    built_late: int = 0  # bodies signed during the run because the prepared pool ran out


class NotificationSource:
    """New signed notifications (pre-built before the clock starts) and redeliveries."""

    def __init__(self, spec: ClientSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.next_index = spec.index_start
        self.acked: list[Notification] = []
        self.pool: list[Notification] = [self._build() for _ in range(spec.pool_size)]
        self.pool.reverse()
        self.built_late = 0

    def _build(self) -> Notification:
        j = self.next_index
        self.next_index += self.spec.index_step
        payments = self.spec.payments
        payment = payments[j % len(payments)]
        status = STATUS_SEQUENCE[(j // len(payments)) % len(STATUS_SEQUENCE)]
        payload = ipn_payload(payment, status, self.spec.updated_at_base_ms + j)
        return make_notification(payload, self.spec.secret)

    def next(self) -> tuple[Notification, bool]:
        if self.acked and self.rng.random() < REDELIVERY_SHARE:
            return self.rng.choice(self.acked), True
        if self.pool:
            return self.pool.pop(), False
        self.built_late += 1
        return self._build(), False


def _request_bytes(spec: ClientSpec, note: Notification | None) -> bytes:
    host = f"Host: {HOST}:{spec.port}\r\n"
    if note is None:
        return f"GET {spec.path} HTTP/1.1\r\n{host}Accept: */*\r\n\r\n".encode()
    head = (
        f"POST {spec.path} HTTP/1.1\r\n{host}Content-Type: application/json\r\n"
        f"Content-Length: {len(note.body)}\r\n{SIGNATURE_HEADER}: {note.signature}\r\n\r\n"
    )
    return head.encode() + note.body


class RawConnection:
    """A minimal HTTP/1.1 keep-alive client: far less CPU per request than httpx."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(HOST, self.port)
        self.writer.write(data)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = -1
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
                break
        if length < 0:
            raise RuntimeError("response without Content-Length")
        body = await self.reader.readexactly(length)
        if b"connection: close" in head.lower():
            await self.close()
        return status, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def _load(spec: ClientSpec, conn: Connection) -> ClientResult:
    result = ClientResult()
    source = NotificationSource(spec) if spec.path == IPN_PATH else None
    health_request = _request_bytes(spec, None)
    limits = httpx.Limits(
        max_connections=spec.concurrency, max_keepalive_connections=spec.concurrency
    )
    client = httpx.AsyncClient(
        base_url=f"http://{HOST}:{spec.port}", limits=limits, timeout=REQUEST_TIMEOUT_SECONDS
    )
    raws = [RawConnection(spec.port) for _ in range(spec.concurrency)]
    try:
        # Open every connection before the clock starts.
        for raw in raws:
            if spec.client == "raw":
                await raw.request(health_request)
        if spec.client == "httpx":
            await asyncio.gather(*(client.get(HEALTH_PATH) for _ in range(spec.concurrency)))
        conn.send("ready")
        if not await asyncio.to_thread(conn.poll, STARTUP_TIMEOUT_SECONDS):
            raise RuntimeError("no start signal from the benchmark")
        start_at: float = conn.recv()
        window_start = start_at + spec.warmup
        window_end = window_start + spec.duration
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))

        async def one(raw: RawConnection) -> None:
            while time.monotonic() < window_end:
                note, redelivery = source.next() if source is not None else (None, False)
                began = time.monotonic()
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                        if spec.client == "raw":
                            data = _request_bytes(spec, note) if note else health_request
                            status, body = await raw.request(data)
                        elif note is None:
                            response = await client.get(spec.path)
                            status, body = response.status_code, response.content
                        else:
                            response = await client.post(
                                spec.path,
                                content=note.body,
                                headers={
                                    "content-type": "application/json",
                                    SIGNATURE_HEADER: note.signature,
                                },
                            )
                            status, body = response.status_code, response.content
                    kind = None if status == 200 else f"HTTP {status}"
                except Exception as exc:
                    kind = type(exc).__name__
                    body = b""
                    await raw.close()
                ended = time.monotonic()
                in_window = window_start <= ended <= window_end
                if kind is None:
                    result.ok_total += 1
                    if in_window:
                        result.window_ok += 1
                        result.window_latencies_ms.append((ended - began) * 1000)
                    if note is not None and source is not None:
                        duplicate = b'"duplicate"' in body
                        result.duplicate_answers += duplicate
                        result.stored_answers += not duplicate
                        if redelivery:
                            result.acked_redeliveries += 1
                        else:
                            result.acked_fingerprints.add(note.fingerprint)
                            source.acked.append(note)
                else:
                    result.errors_total += 1
                    result.error_kinds[kind] = result.error_kinds.get(kind, 0) + 1
                    if in_window:
                        result.window_errors += 1

        await asyncio.gather(*(one(raw) for raw in raws))
    finally:
        for raw in raws:
            await raw.close()
        await client.aclose()
    result.built_late = source.built_late if source is not None else 0
    return result


def client_process(spec: ClientSpec, conn: Connection) -> None:
    """Entry point of a load-generator process: prepare, report ready, run, send results."""
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        runner = asyncio.Runner()
    try:
        with runner:
            result = runner.run(_load(spec, conn))
        conn.send(result)
    except Exception as exc:
        conn.send(RuntimeError(f"load generator failed: {type(exc).__name__}: {exc}"))
    finally:
        conn.close()


# --------------------------------------------------------------------------------------
# CPU accounting from /proc
# --------------------------------------------------------------------------------------


def _proc_ticks(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
    return pids


def _machine_busy_ticks() -> int:
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values[:8]) - idle


@dataclass
class CpuSnapshot:
    server: int
    clients: int
    postgres: dict[int, int]
    machine: int
    at: float


def cpu_snapshot(server_pid: int, client_pids: Sequence[int]) -> CpuSnapshot:
    return CpuSnapshot(
        server=_proc_ticks(server_pid),
        clients=sum(_proc_ticks(pid) for pid in client_pids),
        postgres={pid: _proc_ticks(pid) for pid in _postgres_pids()},
        machine=_machine_busy_ticks(),
        at=time.monotonic(),
    )


@dataclass
class CpuSplit:
    """Percent of one core, averaged over the measured window (the machine has 200 %)."""

    server: float
    clients: float
    postgres: float
    other: float


def background_load(seconds: float) -> float:
    """Percent of one core the whole machine is busy while the benchmark is idle."""
    before = _machine_busy_ticks()
    time.sleep(seconds)
    return 100.0 * (_machine_busy_ticks() - before) / CLOCK_TICKS / seconds


def wait_until_idle(limit_seconds: float, threshold: float = 25.0) -> float:
    """Waits (at most `limit_seconds`) for the machine to be under `threshold` % busy."""
    deadline = time.monotonic() + limit_seconds
    load = background_load(2.0)
    while load > threshold and time.monotonic() < deadline:
        load = background_load(2.0)
    return load


def cpu_split(before: CpuSnapshot, after: CpuSnapshot) -> CpuSplit:
    seconds = after.at - before.at

    def pct(ticks: int) -> float:
        return 100.0 * ticks / CLOCK_TICKS / seconds

    # Postgres backends come and go: count each one's ticks since the first snapshot.
    pg = sum(t - before.postgres.get(pid, 0) for pid, t in after.postgres.items())
    server = after.server - before.server
    clients = after.clients - before.clients
    machine = after.machine - before.machine
    return CpuSplit(
        server=pct(server),
        clients=pct(clients),
        postgres=pct(pg),
        other=max(0.0, pct(machine - server - clients - pg)),
    )


# --------------------------------------------------------------------------------------
# Database, processes
# --------------------------------------------------------------------------------------


async def _admin_execute(server_url: str, statement: str) -> None:
    engine = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def throwaway_database(server_url: str) -> AsyncIterator[str]:
    name = f"cc_bench_{secrets.token_hex(6)}"
    await _admin_execute(server_url, f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        await _admin_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def cryptocheckout_command() -> str:
    candidate = Path(sys.executable).parent / "cryptocheckout"
    found = str(candidate) if candidate.exists() else shutil.which("cryptocheckout")
    if not found:
        raise SystemExit("the `cryptocheckout` command is not installed next to this Python")
    return found


@contextlib.asynccontextmanager
async def receiver(*, answers: bool) -> AsyncIterator[str]:
    """A loopback webhook endpoint: answers 204 at once, or reads and never answers (dead)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = b""
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                buffer += chunk
                head, sep, body = buffer.partition(b"\r\n\r\n")
                if not answers or not sep:
                    continue
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if len(body) >= length:
                    buffer = body[length:]
                    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                    await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://{HOST}:{port}/hooks"
    finally:
        server.close()


async def add_endpoint(engine: AsyncEngine, url: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(WebhookEndpoint).values(
                id=uuid.uuid4(),
                url=url,
                events=None,
                enabled=True,
                secret=new_secret(),
                created_at=datetime.now(UTC),
                updated_at=datetime.now(UTC),
            )
        )


async def count_deliveries(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        jobs = await conn.execute(
            select(func.count()).select_from(Job).where(Job.kind == WEBHOOK_DELIVERY_JOB)
        )
        return int(jobs.scalar_one())


def service_env(database_url: str, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        CRYPTOCHECKOUT_MODE="test",
        NOWPAYMENTS_API_KEY="bench-api-key",
        NOWPAYMENTS_IPN_SECRET=IPN_SECRET,
        ADMIN_TOKEN=secrets.token_urlsafe(24),
        NOWPAYMENTS_BASE="http://127.0.0.1:9",
        NOWPAYMENTS_CALLBACK_URL=f"http://{HOST}:{port}{IPN_PATH}",
        PUBLIC_BASE_URL=f"http://{HOST}:{port}",
        KEYS_ENCRYPTION_KEY=BENCH_KEYS_ENCRYPTION_KEY,
    )
    return env


class Processes:
    """Child processes of the benchmark; all of them are stopped on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.children: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, env=env, cwd=self.workdir, stdout=out, stderr=subprocess.STDOUT
            )
        self.children.append((name, proc, log))
        return proc

    def log_tail(self, proc: subprocess.Popen[bytes], lines: int = 30) -> str:
        for _name, child, log in self.children:
            if child is proc:
                return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT_SECONDS)

    def stop_all(self) -> None:
        for _name, proc, _log in reversed(self.children):
            self.stop(proc)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_ready(port: int, proc: subprocess.Popen[bytes], procs: Processes) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=2.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited:\n{procs.log_tail(proc)}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the server was not ready in time:\n{procs.log_tail(proc)}")


async def wait_log_line(log: Path, needle: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if needle in await asyncio.to_thread(log.read_text, errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"{log.name}: the process exited before '{needle}'")
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{log.name}: no '{needle}' in time")


async def seed(
    engine: AsyncEngine, count: int, keys: int, rng: random.Random
) -> list[SeededPayment]:
    """One product with `keys` licence keys, and `count` waiting orders with one payment each."""
    now = datetime.now(UTC)
    product_id = uuid.uuid4()
    orders, items, payment_rows, seeded = [], [], [], []
    for i in range(count):
        order_id = uuid.uuid4()
        payment = seeded_payment(i, order_id, rng)
        seeded.append(payment)
        orders.append(
            {
                "id": order_id,
                "email": f"buyer{i}@example.com",
                "status": OrderStatus.WAITING,
                "total": PRICE,
                "currency": PRICE_CURRENCY.upper(),
                "access_token": secrets.token_urlsafe(32),
                "created_at": now,
                "updated_at": now,
            }
        )
        items.append(
            {
                "id": uuid.uuid4(),
                "order_id": order_id,
                "product_id": product_id,
                "position": 0,
                "sku": "BENCH-GAME",
                "name": "Benchmark game",
                "quantity": 1,
                "unit_price": PRICE,
            }
        )
        payment_rows.append(
            {
                "id": uuid.uuid4(),
                "order_id": order_id,
                "kind": PaymentKind.PAYMENT,
                "external_id": str(payment.payment_id),
                "status": PaymentStatus.WAITING,
                "provider_status": "waiting",
                "price_amount": PRICE,
                "price_currency": PRICE_CURRENCY,
                "pay_amount": Decimal(payment.pay_amount),
                "pay_currency": PAY_CURRENCY,
                "pay_address": payment.pay_address,
                "created_at": now,
                "updated_at": now,
            }
        )
    async with engine.begin() as conn:
        await conn.execute(
            insert(Product.__table__),
            [
                {
                    "id": product_id,
                    "sku": "BENCH-GAME",
                    "name": "Benchmark game",
                    "price": PRICE,
                    "currency": PRICE_CURRENCY.upper(),
                    "active": True,
                    "created_at": now,
                    "updated_at": now,
                }
            ],
        )
        ring = KeyRing.parse(BENCH_KEYS_ENCRYPTION_KEY)
        key_rows = []
        for k in range(keys):
            row_id = uuid.uuid4()
            sealed = ring.seal(f"KEY-{k:06d}", product_id=product_id.bytes, row_id=row_id.bytes)
            key_rows.append(
                {
                    "id": row_id,
                    "product_id": product_id,
                    "ciphertext": sealed.ciphertext,
                    "key_id": sealed.key_id,
                    "key_hash": sealed.key_hash,
                }
            )
        await conn.execute(insert(LicenceKey.__table__), key_rows)
        for chunk in _chunks(list(range(count)), 2000):
            await conn.execute(insert(Order.__table__), [orders[i] for i in chunk])
            await conn.execute(insert(OrderItem.__table__), [items[i] for i in chunk])
            await conn.execute(insert(Payment.__table__), [payment_rows[i] for i in chunk])
    return seeded


def _chunks(values: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


# --------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


COMMITS = "cryptocheckout_ipn_commits_total"
WRITTEN = ("cryptocheckout_ipn_stored_total", "cryptocheckout_ipn_redelivered_total")


async def server_metrics(port: int) -> dict[str, float]:
    """The server's counters from /metrics, summed over labels."""
    async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=5.0) as client:
        text_body = (await client.get("/metrics")).text
    values: dict[str, float] = {}
    for line in text_body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            key = name.split("{", 1)[0]
            values[key] = values.get(key, 0.0) + float(value)
    return values


@dataclass
class PhaseResult:
    endpoint: str
    concurrency: int
    duration: float
    requests: int
    errors: int
    rps: float
    p50: float
    p99: float
    cpu: CpuSplit
    error_kinds: dict[str, int]
    results: list[ClientResult]
    commits: float  # group commits of notifications in the window (from /metrics)
    written: float  # notifications those commits stored or counted as redeliveries

    @property
    def server_us_per_request(self) -> float:
        """Server CPU time per answered request: does not depend on how busy the machine is."""
        return self.cpu.server * 10_000 / self.rps if self.rps else math.nan

    @property
    def built_late(self) -> int:
        return sum(r.built_late for r in self.results)


async def run_phase(
    *,
    port: int,
    server_pid: int,
    path: str,
    concurrency: int,
    clients: int,
    client_kind: str,
    warmup: float,
    duration: float,
    payments: list[SeededPayment] | None = None,
    phase_index: int = 0,
    expected_rps: float = 0.0,
) -> PhaseResult:
    context = multiprocessing.get_context("spawn")
    shares = [
        concurrency // clients + (1 if k < concurrency % clients else 0) for k in range(clients)
    ]
    started: list[tuple[multiprocessing.process.BaseProcess, Connection]] = []
    base_ms = int(time.time() * 1000)
    pool = 0
    if payments is not None:
        # Enough fresh bodies for the whole phase, built before the clock starts.
        # (sized for up to 60 % of /healthz's rate; beyond that bodies are signed on the fly,
        # which is reported)
        share = 0.6 * (1 - REDELIVERY_SHARE) / clients
        pool = int(expected_rps * (warmup + duration) * share) + 500
    try:
        for k, share in enumerate(shares):
            spec = ClientSpec(
                port=port,
                path=path,
                concurrency=share,
                client=client_kind,
                warmup=warmup,
                duration=duration,
                payments=payments or [],
                index_start=phase_index * 100_000_000 + k,
                index_step=clients,
                pool_size=pool,
                seed=phase_index * 1000 + k,
                updated_at_base_ms=base_ms,
            )
            parent, child = context.Pipe()
            proc = context.Process(target=client_process, args=(spec, child), daemon=True)
            proc.start()
            child.close()
            started.append((proc, parent))
        for _proc, parent in started:
            if not await asyncio.to_thread(parent.poll, 120.0):
                raise RuntimeError("a load generator did not get ready")
            message = parent.recv()
            if isinstance(message, Exception):
                raise message
        start_at = time.monotonic() + 0.2
        for _proc, parent in started:
            parent.send(start_at)
        pids = [proc.pid for proc, _ in started if proc.pid is not None]
        await asyncio.sleep(max(0.0, start_at + warmup - time.monotonic()))
        before = cpu_snapshot(server_pid, pids)
        metrics_before = await server_metrics(port)
        await asyncio.sleep(max(0.0, start_at + warmup + duration - time.monotonic()))
        after = cpu_snapshot(server_pid, pids)
        metrics_after = await server_metrics(port)
        results: list[ClientResult] = []
        for _proc, parent in started:
            if not await asyncio.to_thread(parent.poll, REQUEST_TIMEOUT_SECONDS + 30):
                raise RuntimeError("a load generator did not report")
            message = parent.recv()
            if isinstance(message, Exception):
                raise message
            results.append(message)
    finally:
        for proc, parent in started:
            parent.close()
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
    latencies = [ms for r in results for ms in r.window_latencies_ms]
    kinds: dict[str, int] = {}
    for r in results:
        for kind, n in r.error_kinds.items():
            kinds[kind] = kinds.get(kind, 0) + n
    ok = sum(r.window_ok for r in results)
    return PhaseResult(
        endpoint="IPN" if path == IPN_PATH else "healthz",
        concurrency=concurrency,
        duration=duration,
        requests=ok,
        errors=sum(r.errors_total for r in results),
        rps=ok / duration,
        p50=percentile(latencies, 50),
        p99=percentile(latencies, 99),
        cpu=cpu_split(before, after),
        error_kinds=kinds,
        results=results,
        commits=metrics_after.get(COMMITS, 0) - metrics_before.get(COMMITS, 0),
        written=sum(metrics_after.get(n, 0) - metrics_before.get(n, 0) for n in WRITTEN),
    )


@dataclass
class Durability:
    acked_distinct: int
    present: int
    missing: int
    acked_requests: int
    acked_redeliveries: int
    stored_answers: int
    duplicate_answers: int
    rows: int
    deliveries_sum: int

    @property
    def ok(self) -> bool:
        counted = self.deliveries_sum - self.rows
        return self.missing == 0 and counted >= self.acked_redeliveries


async def check_durability(engine: AsyncEngine, phases: list[PhaseResult]) -> Durability:
    acked: set[str] = set()
    redeliveries = stored = duplicates = requests = 0
    for phase in phases:
        if phase.endpoint != "IPN":
            continue
        for r in phase.results:
            acked |= r.acked_fingerprints
            redeliveries += r.acked_redeliveries
            stored += r.stored_answers
            duplicates += r.duplicate_answers
            requests += r.ok_total
    async with engine.connect() as conn:
        rows = (await conn.execute(select(WebhookLog.fingerprint, WebhookLog.deliveries))).all()
    in_db = {fp for fp, _ in rows}
    present = len(acked & in_db)
    return Durability(
        acked_distinct=len(acked),
        present=present,
        missing=len(acked) - present,
        acked_requests=requests,
        acked_redeliveries=redeliveries,
        stored_answers=stored,
        duplicate_answers=duplicates,
        rows=len(rows),
        deliveries_sum=sum(d for _, d in rows),
    )


@dataclass
class PaidLatency:
    sent: int
    acked: int
    paid_audit_ms: list[float]
    paid_polled_ms: list[float]
    fulfilled_audit_ms: list[float]
    not_paid: int
    rate: float
    errors: int
    slowest: list[tuple[int, float]]  # (send index, ms to paid), slowest first


async def measure_paid_latency(
    engine: AsyncEngine, port: int, payments: list[SeededPayment], rate: float
) -> PaidLatency:
    """Paced `finished` notifications; time from each 200 to the order's change to paid."""
    order_ids = [uuid.UUID(p.order_id) for p in payments]
    acked_at: dict[uuid.UUID, float] = {}
    observed_at: dict[uuid.UUID, float] = {}
    errors = 0
    base_ms = int(time.time() * 1000)
    notes = [
        make_notification(ipn_payload(p, "finished", base_ms + i), IPN_SECRET)
        for i, p in enumerate(payments)
    ]
    all_sent = asyncio.Event()

    async def send(client: httpx.AsyncClient, order_id: uuid.UUID, note: Notification) -> None:
        nonlocal errors
        try:
            response = await client.post(
                IPN_PATH,
                content=note.body,
                headers={"content-type": "application/json", SIGNATURE_HEADER: note.signature},
            )
        except httpx.HTTPError:
            errors += 1
            return
        if response.status_code == 200:
            acked_at[order_id] = time.time()
        else:
            errors += 1

    async def poll() -> None:
        paid_states = [OrderStatus.PAID.value, OrderStatus.FULFILLED.value]
        query = text("SELECT id FROM orders WHERE id IN :ids AND status IN :states").bindparams(
            bindparam("ids", expanding=True), bindparam("states", expanding=True)
        )
        deadline: float | None = None
        async with engine.connect() as conn:
            while True:
                waiting = [oid for oid in order_ids if oid not in observed_at]
                if not waiting:
                    return
                if all_sent.is_set():
                    deadline = deadline or time.monotonic() + 30.0
                    if time.monotonic() > deadline:
                        return
                found = (await conn.execute(query, {"ids": waiting, "states": paid_states})).all()
                await conn.commit()
                now = time.time()
                for (oid,) in found:
                    observed_at[uuid.UUID(str(oid))] = now
                await asyncio.sleep(0.005)

    poller = asyncio.create_task(poll())
    async with httpx.AsyncClient(
        base_url=f"http://{HOST}:{port}", timeout=REQUEST_TIMEOUT_SECONDS
    ) as client:
        await client.get(HEALTH_PATH)
        tasks = []
        start = time.monotonic()
        for i, (order_id, note) in enumerate(zip(order_ids, notes, strict=True)):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(send(client, order_id, note)))
        await asyncio.gather(*tasks)
    all_sent.set()
    await poller

    async with engine.connect() as conn:
        changes = (
            await conn.execute(
                select(
                    StatusChange.order_id, StatusChange.to_status, StatusChange.created_at
                ).where(
                    StatusChange.subject == "order",
                    StatusChange.to_status.in_(
                        [OrderStatus.PAID.value, OrderStatus.FULFILLED.value]
                    ),
                    StatusChange.order_id.in_(order_ids),
                )
            )
        ).all()
    paid_audit, fulfilled_audit = [], []
    position = {order_id: i for i, order_id in enumerate(order_ids)}
    by_index: list[tuple[int, float]] = []
    for order_id, to_status, created_at in changes:
        if order_id not in acked_at:
            continue
        delta = (created_at.timestamp() - acked_at[order_id]) * 1000
        if to_status == OrderStatus.PAID.value:
            paid_audit.append(delta)
            by_index.append((position[order_id], delta))
        else:
            fulfilled_audit.append(delta)
    polled = [(observed_at[o] - acked_at[o]) * 1000 for o in acked_at if o in observed_at]
    return PaidLatency(
        sent=len(notes),
        acked=len(acked_at),
        paid_audit_ms=paid_audit,
        paid_polled_ms=polled,
        fulfilled_audit_ms=fulfilled_audit,
        not_paid=len(acked_at) - len(paid_audit),
        rate=rate,
        errors=errors,
        slowest=sorted(by_index, key=lambda item: -item[1])[:5],
    )


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def _ms(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.1f}"


def code_version() -> str:
    """The commit the benchmarked code is at, and whether src/ has uncommitted changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} (with uncommitted changes in src/)" if dirty else head


def render_report(
    *,
    args: argparse.Namespace,
    phases: list[PhaseResult],
    durability: Durability,
    latency: PaidLatency,
    started: datetime,
) -> str:
    lines: list[str] = []
    add = lines.append
    add(
        f"Run of {started:%Y-%m-%d %H:%M} UTC at commit {args.code_version}: "
        f"`{args.command_line}`; "
        f"{args.duration:g} s per row after {args.warmup:g} s warm-up, "
        f"{args.clients} load-generator process(es), `{args.client}` HTTP client; "
        f"{os.cpu_count()} CPU cores shared by everything below; the machine was "
        f"{args.background:.0f} % busy (of one core) just before the run."
    )
    add("")
    if args.endpoint != "none":
        kind = "answers 204 at once" if args.endpoint == "live" else "never answers (dead)"
        add(
            f"A webhook endpoint of the shop's own systems that {kind} was configured "
            f"(`--endpoint {args.endpoint}`): {getattr(args, 'deliveries', 0)} delivery jobs "
            "by the end of the latency phase."
        )
        add("")
    add(
        "| endpoint | connections | requests/s | p50 ms | p99 ms | errors | "
        "CPU server | CPU load gen. | CPU PostgreSQL | CPU other | server CPU per request |"
    )
    add("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for p in phases:
        add(
            f"| {'GET ' + HEALTH_PATH if p.endpoint == 'healthz' else 'POST ' + IPN_PATH} "
            f"| {p.concurrency} | {p.rps:,.0f} | {_ms(p.p50)} | {_ms(p.p99)} | {p.errors} "
            f"| {p.cpu.server:.0f} % | {p.cpu.clients:.0f} % | {p.cpu.postgres:.0f} % "
            f"| {p.cpu.other:.0f} % | {p.server_us_per_request:,.0f} µs |"
        )
    add("")
    add(
        "CPU is percent of one core over the measured window (the machine has 200 %); "
        '"other" is every other process on the machine. Server CPU per request = server '
        "CPU time / answered requests, which does not depend on how much CPU the server got."
    )
    add("")
    add(
        "| connections | IPN / healthz requests/s | IPN p99 / healthz p99 | target met? "
        "| healthz / IPN server CPU per request |"
    )
    add("|---:|---:|---:|---|---:|")
    by_key = {(p.endpoint, p.concurrency): p for p in phases}
    for c in args.concurrency:
        health, ipn = by_key.get(("healthz", c)), by_key.get(("IPN", c))
        if health is None or ipn is None:
            continue
        throughput = ipn.rps / health.rps if health.rps else math.nan
        tail = ipn.p99 / health.p99 if health.p99 else math.nan
        if c == 64:
            met = "yes" if throughput >= 0.5 and tail <= 4.0 else "**no**"
            verdict = f"{met} (target: >= 0.50 and <= 4.0)"
        else:
            verdict = "(no target at this concurrency)"
        cost = health.server_us_per_request / ipn.server_us_per_request
        add(f"| {c} | {throughput:.2f} | {tail:.2f} | {verdict} | {cost:.2f} |")
    add("")
    commits = [
        f"{p.concurrency} connections: {p.commits / p.duration:.0f} commits/s, "
        f"{p.written / p.commits:.1f} notifications per commit"
        for p in phases
        if p.endpoint == "IPN" and p.commits
    ]
    if commits:
        add(f"Group commit (server's `/metrics`, measured window): {'; '.join(commits)}.")
        add("")
    d = durability
    add(
        f"Durability: {d.acked_distinct:,} distinct notifications acknowledged with 200, "
        f"{d.present:,} of them in `webhook_logs` ({d.missing} missing); "
        f"{d.acked_requests:,} acknowledged IPN requests of which {d.acked_redeliveries:,} "
        f"redeliveries; `sum(deliveries)` = {d.deliveries_sum:,} over {d.rows:,} rows, i.e. "
        f"{d.deliveries_sum - d.rows:,} redeliveries counted; answers: {d.stored_answers:,} "
        f"`stored`, {d.duplicate_answers:,} `duplicate`. "
        f"{'OK' if d.ok else '**FAILED**'}."
    )
    add("")
    lat = latency
    median = percentile(lat.paid_audit_ms, 50)
    add(
        f"Notification -> order paid, 2 `cryptocheckout worker` processes, "
        f"{lat.sent} `finished` notifications at {lat.rate:g}/s "
        f"({lat.acked} acknowledged, {lat.errors} errors, {lat.not_paid} not paid in time):"
    )
    add("")
    add("| measured as | median ms | p90 ms | p99 ms | max ms |")
    add("|---|---:|---:|---:|---:|")
    for label, values in (
        ("200 answer -> `status_changes` row to `paid` (worker clock)", lat.paid_audit_ms),
        ("200 answer -> order seen `paid`/`fulfilled` by 5 ms polling", lat.paid_polled_ms),
        ("200 answer -> `status_changes` row to `fulfilled`", lat.fulfilled_audit_ms),
    ):
        add(
            f"| {label} | {_ms(percentile(values, 50))} | {_ms(percentile(values, 90))} "
            f"| {_ms(percentile(values, 99))} | {_ms(max(values) if values else math.nan)} |"
        )
    add("")
    met = not math.isnan(median) and median <= 250 and lat.not_paid == 0
    add(f"Target median <= 250 ms to `paid`: {'met' if met else '**not met**'}.")
    return "\n".join(lines)


def update_readme(report: str) -> None:
    block = f"{RESULTS_BEGIN}\n{report}\n{RESULTS_END}"
    if README.exists():
        current = README.read_text()
        if RESULTS_BEGIN in current and RESULTS_END in current:
            head, _, rest = current.partition(RESULTS_BEGIN)
            _, _, tail = rest.partition(RESULTS_END)
            README.write_text(head + block + tail)
            return
        README.write_text(current.rstrip() + "\n\n## Results\n\n" + block + "\n")
        return
    README.write_text("# Benchmarks\n\n## Results\n\n" + block + "\n")


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


async def set_aside_backlog(engine: AsyncEngine, analyze: bool) -> int:
    """Marks the throughput phase's notifications processed, so workers start idle.

    Then ANALYZE, as autovacuum would do before long: with statistics that still say "all
    pending", the workers' next-notification query walks the created_at index through every
    processed row (see README).
    """
    async with engine.begin() as conn:
        result = await conn.execute(
            update(WebhookLog)
            .where(WebhookLog.status == WebhookLogStatus.PENDING)
            .values(status=WebhookLogStatus.PROCESSED, processed_at=datetime.now(UTC))
        )
    if analyze:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("ANALYZE webhook_logs"))
    return int(result.rowcount or 0)


async def count_pending(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    select(func.count())
                    .select_from(WebhookLog)
                    .where(WebhookLog.status == WebhookLogStatus.PENDING)
                )
            ).scalar_one()
        )


async def run(args: argparse.Namespace) -> int:
    started = datetime.now(UTC)
    args.code_version = await asyncio.to_thread(code_version)
    main_task = asyncio.current_task()
    if main_task is not None:
        # SIGTERM cancels like Ctrl-C does, so that processes and the database are cleaned up.
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    server_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_SERVER_URL)
    if make_url(server_url).host not in ("127.0.0.1", "localhost", "::1", None):
        raise SystemExit("BENCH_DATABASE_URL must point at a loopback server")
    command = cryptocheckout_command()
    rng = random.Random(20240601)
    with tempfile.TemporaryDirectory(prefix="cc-bench-") as tmp:
        workdir = Path(tmp)
        procs = Processes(workdir)
        async with (
            throwaway_database(server_url) as database_url,
            contextlib.AsyncExitStack() as stack,
        ):
            engine = create_engine(database_url)
            try:
                port = free_port()
                env = service_env(database_url, port)
                print(f"database {make_url(database_url).database}: migrating", flush=True)
                migrate = await asyncio.to_thread(
                    subprocess.run,
                    [command, "migrate"],
                    env=env,
                    cwd=workdir,
                    capture_output=True,
                    timeout=120,
                )
                if migrate.returncode != 0:
                    raise RuntimeError(f"migrate failed:\n{migrate.stderr.decode()[-2000:]}")
                payments = await seed(
                    engine, args.payments + args.latency_count, args.latency_count + 10, rng
                )
                throughput_payments = payments[: args.payments]
                latency_payments = payments[args.payments :]
                print(f"seeded {len(payments)} orders with waiting payments", flush=True)
                if args.endpoint != "none":
                    hooks = await stack.enter_async_context(
                        receiver(answers=args.endpoint == "live")
                    )
                    await add_endpoint(engine, hooks)
                    env["WEBHOOKS_ALLOW_PRIVATE"] = "true"
                    print(f"webhook endpoint {hooks} ({args.endpoint})", flush=True)

                server = procs.start(
                    "server",
                    [command, "serve", "--no-worker", "--host", HOST, "--port", str(port)],
                    env,
                )
                await wait_ready(port, server, procs)
                print(f"server pid {server.pid} ready on {HOST}:{port}", flush=True)
                args.background = await asyncio.to_thread(wait_until_idle, args.wait_idle)
                print(
                    f"machine busy before the run: {args.background:.0f}% of one core", flush=True
                )

                phases: list[PhaseResult] = []
                health_rps: dict[int, float] = {}
                # /healthz then the IPN endpoint at each concurrency, back to back, so that
                # both rows of a ratio see the same conditions on the machine.
                plan = [(path, c) for c in args.concurrency for path in (HEALTH_PATH, IPN_PATH)]
                for index, (path, concurrency) in enumerate(plan):
                    if index and args.wait_idle:
                        await asyncio.to_thread(wait_until_idle, args.wait_idle)
                    phase = await run_phase(
                        port=port,
                        server_pid=server.pid,
                        path=path,
                        concurrency=concurrency,
                        clients=args.clients,
                        client_kind=args.client,
                        warmup=args.warmup,
                        duration=args.duration,
                        payments=throughput_payments if path == IPN_PATH else None,
                        phase_index=index,
                        expected_rps=health_rps.get(concurrency, 2000.0),
                    )
                    if path == HEALTH_PATH:
                        health_rps[concurrency] = phase.rps
                    phases.append(phase)
                    print(
                        f"{phase.endpoint:8s} c={concurrency:3d}: {phase.rps:8.0f} req/s  "
                        f"p50 {_ms(phase.p50)} ms  p99 {_ms(phase.p99)} ms  "
                        f"errors {phase.errors} {phase.error_kinds or ''}  "
                        f"CPU server {phase.cpu.server:.0f}% load-gen {phase.cpu.clients:.0f}% "
                        f"postgres {phase.cpu.postgres:.0f}% other {phase.cpu.other:.0f}%  "
                        f"server CPU {phase.server_us_per_request:.0f} us/request",
                        flush=True,
                    )
                    if phase.commits:
                        print(
                            f"  group commit: {phase.commits / phase.duration:.0f} commits/s, "
                            f"{phase.written / phase.commits:.1f} notifications per commit"
                        )
                    if phase.built_late:
                        print(f"  ({phase.built_late} bodies were signed during the run)")
                    if server.poll() is not None:
                        raise RuntimeError(f"the server exited:\n{procs.log_tail(server)}")

                durability = await check_durability(engine, phases)
                print(
                    f"durability: {durability.present}/{durability.acked_distinct} acknowledged "
                    f"in webhook_logs, {durability.deliveries_sum - durability.rows} "
                    f"redeliveries counted, {durability.acked_redeliveries} acknowledged",
                    flush=True,
                )

                set_aside = await set_aside_backlog(engine, analyze=not args.skip_analyze)
                print(f"{set_aside} throughput notifications set aside as processed", flush=True)
                workers = []
                for n in range(2):
                    worker = procs.start(f"worker{n}", [command, "worker"], env)
                    workers.append(worker)
                for n, worker in enumerate(workers):
                    await wait_log_line(workdir / f"worker{n}.log", "started", worker)
                latency = await measure_paid_latency(
                    engine, port, latency_payments, args.latency_rate
                )
                print(
                    f"paid latency: median {_ms(percentile(latency.paid_audit_ms, 50))} ms, "
                    f"p90 {_ms(percentile(latency.paid_audit_ms, 90))} ms, "
                    f"p99 {_ms(percentile(latency.paid_audit_ms, 99))} ms "
                    f"({len(latency.paid_audit_ms)}/{latency.sent} paid); slowest (send #, ms): "
                    + ", ".join(f"#{i} {ms:.0f}" for i, ms in latency.slowest),
                    flush=True,
                )
                if args.endpoint != "none":
                    args.deliveries = await count_deliveries(engine)
                    print(f"{args.deliveries} deliveries to the endpoint", flush=True)
                pending = await count_pending(engine)
                if pending:
                    print(f"warning: {pending} notifications still pending", flush=True)
            finally:
                procs.stop_all()
                await engine.dispose()

    report = render_report(
        args=args, phases=phases, durability=durability, latency=latency, started=started
    )
    print()
    print(report)
    if not args.no_readme:
        update_readme(report)
        print(f"\nwritten to {README}")
    return 0 if durability.ok else 1


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, help="seconds measured per row (default 10)")
    parser.add_argument("--quick", action="store_true", help="3 s per row, fewer notifications")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[16, 64], help="connections per row"
    )
    parser.add_argument(
        "--clients", type=int, default=1, help="load-generator processes (default 1)"
    )
    parser.add_argument(
        "--client",
        choices=["raw", "httpx"],
        default="raw",
        help="load-generator HTTP client: a minimal keep-alive one (default) or httpx",
    )
    parser.add_argument("--latency-count", type=int, help="finished notifications (default 200)")
    parser.add_argument("--latency-rate", type=float, default=40.0, help="per second (default 40)")
    parser.add_argument("--no-readme", action="store_true", help="do not write bench/README.md")
    parser.add_argument(
        "--endpoint",
        choices=["none", "live", "dead"],
        default="none",
        help="a webhook endpoint of the shop's own systems: none, one answering at once, "
        "or one that accepts connections and never answers",
    )
    parser.add_argument(
        "--skip-analyze",
        action="store_true",
        help="no ANALYZE after setting the throughput notifications aside (stale statistics)",
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="S",
        help="first wait up to S seconds for other processes to leave the CPU idle (< 25 %%)",
    )
    args = parser.parse_args(argv)
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.warmup = 0.5 if args.quick else 1.0
    args.latency_count = args.latency_count or (60 if args.quick else 200)
    args.payments = 1000 if args.quick else 5000
    if args.duration <= 0 or args.duration > 600 or not 1 <= args.clients <= 16:
        parser.error("--duration must be in (0, 600] and --clients in [1, 16]")
    if not 0 <= args.wait_idle <= 3600:
        parser.error("--wait-idle must be in [0, 3600]")
    if any(not 1 <= c <= 1024 for c in args.concurrency) or args.latency_rate <= 0:
        parser.error("--concurrency must be in [1, 1024] and --latency-rate positive")
    args.command_line = " ".join(
        [".venv/bin/python bench/ipn_bench.py", *(argv if argv is not None else sys.argv[1:])]
    )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return asyncio.run(run(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted (processes stopped, database dropped)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: the SQLite default under mixed load, counting 503 answers.

Run from the repository root:

    .venv/bin/python bench/sqlite_mixed_bench.py [--duration S] [--ipn N] [--orders M]

A small shop's peak on the embedded default: `cryptocheckout serve` (with its in-process
worker, as a one-process shop runs) on a fresh SQLite file, N connections posting signed
notifications (30 % exact redeliveries) and M connections creating orders (with an
Idempotency-Key), all closed loop over HTTP/1.1 keep-alive for S seconds. It prints the
answers per endpoint (every 503 is a notification or an order the shop turned away), the
latencies, and the CPU the server used. Defaults: 48 IPN and 16 order connections, 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import ipn_bench as ib

ORDERS_PATH = "/api/orders"


@dataclass
class Tally:
    statuses: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)


def _order_request(port: int, product_id: str) -> bytes:
    body = json.dumps(
        {"email": "buyer@example.com", "items": [{"product_id": product_id, "quantity": 1}]}
    ).encode()
    head = (
        f"POST {ORDERS_PATH} HTTP/1.1\r\nHost: {ib.HOST}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Idempotency-Key: {uuid.uuid4()}\r\n\r\n"
    )
    return head.encode() + body


def _ipn_request(port: int, note: ib.Notification) -> bytes:
    head = (
        f"POST {ib.IPN_PATH} HTTP/1.1\r\nHost: {ib.HOST}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(note.body)}\r\n"
        f"{ib.SIGNATURE_HEADER}: {note.signature}\r\n\r\n"
    )
    return head.encode() + note.body


async def mixed_load(
    port: int, product_id: str, ipn_connections: int, order_connections: int, duration: float
) -> tuple[Tally, Tally]:
    """Closed-loop load on both endpoints; returns the IPN and the order tallies."""
    ipn, orders = Tally(), Tally()
    now_ms = int(time.time() * 1000)
    counter = iter(range(10**9))
    acked: list[ib.Notification] = []
    end = time.monotonic() + duration

    def next_ipn() -> ib.Notification:
        if acked and next(counter) % 10 < 3:
            return acked[-1 - (len(acked) // 2)]
        i = next(counter)
        payment = ib.SeededPayment(
            payment_id=ib.PAYMENT_ID_BASE + i,
            order_id=f"mixed-{i}",
            pay_amount="0.00031",
            pay_address="bc1qmixedbench",
            purchase_id=4_400_000_000 + i,
        )
        return ib.make_notification(ib.ipn_payload(payment, "waiting", now_ms + i), ib.IPN_SECRET)

    async def one(kind: str) -> None:
        raw = ib.RawConnection(port)
        tally = ipn if kind == "ipn" else orders
        try:
            while time.monotonic() < end:
                note = next_ipn() if kind == "ipn" else None
                request = _ipn_request(port, note) if note else _order_request(port, product_id)
                began = time.monotonic()
                try:
                    async with asyncio.timeout(ib.REQUEST_TIMEOUT_SECONDS):
                        status, _ = await raw.request(request)
                    tally.statuses[str(status)] += 1
                    tally.latencies_ms.append((time.monotonic() - began) * 1000)
                    if note is not None and status == 200:
                        acked.append(note)
                except Exception as exc:
                    tally.statuses[type(exc).__name__] += 1
                    await raw.close()
        finally:
            await raw.close()

    await asyncio.gather(
        *(one("ipn") for _ in range(ipn_connections)),
        *(one("order") for _ in range(order_connections)),
    )
    return ipn, orders


async def create_product(base_url: str, admin_token: str, keys: int) -> str:
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
        response = await client.post(
            "/api/admin/products",
            json={"sku": "MIXED-1", "name": "Mixed load key", "price": "12.50", "currency": "usd"},
        )
        response.raise_for_status()
        product_id: str = response.json()["id"]
        for start in range(0, keys, 1000):
            batch = [f"KEY-{n:08d}" for n in range(start, min(keys, start + 1000))]
            added = await client.post(
                f"/api/admin/products/{product_id}/keys", json={"keys": batch}
            )
            added.raise_for_status()
    return product_id


def describe(name: str, tally: Tally, seconds: float) -> str:
    answers = ", ".join(f"{k}: {v:,}" for k, v in sorted(tally.statuses.items()))
    total = sum(tally.statuses.values())
    return (
        f"| {name} | {total:,} ({total / seconds:,.0f}/s) | {answers} "
        f"| {tally.statuses.get('503', 0):,} | {ib.percentile(tally.latencies_ms, 50):,.1f} "
        f"| {ib.percentile(tally.latencies_ms, 99):,.1f} "
        f"| {max(tally.latencies_ms, default=0):,.0f} |"
    )


async def run(args: argparse.Namespace) -> int:
    started = datetime.now(UTC)
    version = await asyncio.to_thread(ib.code_version)
    command = ib.cryptocheckout_command()
    with tempfile.TemporaryDirectory(prefix="cc-sqlite-mixed-") as tmp:
        procs = ib.Processes(Path(tmp))
        try:
            port = ib.free_port()
            env = ib.service_env(f"sqlite:///{tmp}/shop.db", port)
            migrate = await asyncio.to_thread(
                subprocess.run,
                [command, "migrate"],
                env=env,
                cwd=tmp,
                capture_output=True,
                timeout=120,
            )
            if migrate.returncode != 0:
                raise RuntimeError(f"migrate failed:\n{migrate.stderr.decode()[-2000:]}")
            argv = [command, "serve", "--host", ib.HOST, "--port", str(port)]
            server = procs.start("server", argv, env)
            await ib.wait_ready(port, server, procs)
            product_id = await create_product(
                f"http://{ib.HOST}:{port}", env["ADMIN_TOKEN"], args.keys
            )
            background = await asyncio.to_thread(ib.background_load, 1.0)
            cpu_before = ib._proc_ticks(server.pid)
            began = time.monotonic()
            ipn, orders = await mixed_load(port, product_id, args.ipn, args.orders, args.duration)
            seconds = time.monotonic() - began
            server_cpu = 100 * (ib._proc_ticks(server.pid) - cpu_before) / ib.CLOCK_TICKS / seconds
            if server.poll() is not None:
                raise RuntimeError(f"the server exited:\n{procs.log_tail(server)}")
        finally:
            procs.stop_all()
    print(
        f"Run of {started:%Y-%m-%d %H:%M} UTC at commit {version}: `.venv/bin/python "
        f"bench/sqlite_mixed_bench.py --duration {args.duration:g} --ipn {args.ipn} "
        f"--orders {args.orders}`; `cryptocheckout serve` (with its worker) on SQLite; the "
        f"machine (2 cores, shared) was {background:.0f} % busy (of one core) just before "
        f"the run; server CPU {server_cpu:.0f} %.\n"
    )
    print("| endpoint | requests | answers | 503 | p50 ms | p99 ms | max ms |")
    print("|---|---:|---|---:|---:|---:|---:|")
    print(describe(f"POST {ib.IPN_PATH} ({args.ipn} connections)", ipn, seconds))
    print(describe(f"POST {ORDERS_PATH} ({args.orders} connections)", orders, seconds))
    unavailable = ipn.statuses.get("503", 0) + orders.statuses.get("503", 0)
    return 1 if unavailable else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument("--ipn", type=int, default=48, help="IPN connections (default 48)")
    parser.add_argument("--orders", type=int, default=16, help="order connections (default 16)")
    parser.add_argument("--keys", type=int, default=100, help="licence keys in stock")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run(parse_args(argv)))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())

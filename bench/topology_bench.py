"""Two API processes through PgBouncer (transaction mode) against the same connected directly.

Run from the repository root (it needs `pgbouncer`, see `.ci/run`, and a PostgreSQL server,
BENCH_DATABASE_URL, by default the local one):

    .venv/bin/python bench/topology_bench.py [--duration S] [--concurrency N]

For each route (direct, then PgBouncer with `DATABASE_POOLED=true`) it starts
`cryptocheckout serve --workers 2 --no-worker` on a throwaway database and drives, closed loop
over HTTP/1.1 keep-alive from one load-generator process: `GET /api/products` (a SQLAlchemy
read per request) and `POST /api/webhooks/nowpayments` (new signed notifications, stored by
the IPN group commit). It prints requests/s, p50, p99 and errors per row and the ratio
PgBouncer / direct. Short runs: the machine is shared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import ipn_bench as ib  # noqa: E402
from tests.support.pgbouncer import run_pgbouncer  # noqa: E402

PRODUCTS_PATH = "/api/products"
PREBUILT = 12_000


@dataclass
class Row:
    route: str
    path: str
    ok: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


def _get(port: int, path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {ib.HOST}:{port}\r\nAccept: */*\r\n\r\n".encode()


def _post_ipn(port: int, note: ib.Notification) -> bytes:
    head = (
        f"POST {ib.IPN_PATH} HTTP/1.1\r\nHost: {ib.HOST}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(note.body)}\r\n"
        f"{ib.SIGNATURE_HEADER}: {note.signature}\r\n\r\n"
    )
    return head.encode() + note.body


async def drive(
    route: str, port: int, path: str, concurrency: int, warmup: float, duration: float
) -> Row:
    row = Row(route, path)
    rng = random.Random(7)
    payments = [ib.seeded_payment(i, uuid.uuid4(), rng) for i in range(200)]
    base_ms = int(time.time() * 1000)

    def build(j: int) -> bytes:
        payment = payments[j % len(payments)]
        status = ib.STATUS_SEQUENCE[(j // len(payments)) % len(ib.STATUS_SEQUENCE)]
        payload = ib.ipn_payload(payment, status, base_ms + j)
        return _post_ipn(port, ib.make_notification(payload, ib.IPN_SECRET))

    # New notifications are signed before the clock starts (then on the fly if they run out).
    pool = [build(j) for j in range(PREBUILT)] if path == ib.IPN_PATH else []
    pool.reverse()
    counter = iter(range(PREBUILT, 10**9))
    start = time.monotonic() + warmup
    stop = start + duration

    def request() -> bytes:
        if path == PRODUCTS_PATH:
            return _get(port, path)
        return pool.pop() if pool else build(next(counter))

    async def one_connection() -> None:
        conn = ib.RawConnection(port)
        try:
            while (now := time.monotonic()) < stop:
                data = request()
                sent = time.monotonic()
                try:
                    status, _ = await asyncio.wait_for(conn.request(data), 10)
                except (OSError, RuntimeError, asyncio.IncompleteReadError, TimeoutError):
                    await conn.close()
                    row.errors += 1
                    continue
                took = time.monotonic() - sent
                if status != 200:
                    row.errors += 1
                elif now >= start and sent + took <= stop:
                    row.ok += 1
                    row.latencies_ms.append(took * 1000)
        finally:
            await conn.close()

    await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    row.seconds = duration
    return row


async def run_route(
    route: str, url: str, pooled: bool, args: argparse.Namespace, workdir: Path
) -> list[Row]:
    port = ib.free_port()
    env = ib.service_env(url, port)
    env["DATABASE_POOLED"] = "true" if pooled else "false"
    procs = ib.Processes(workdir)
    argv = [ib.cryptocheckout_command(), "serve", "--workers", "2", "--no-worker"]
    proc = procs.start(f"serve-{route}", [*argv, "--port", str(port)], env)
    try:
        await ib.wait_ready(port, proc, procs)
        await asyncio.sleep(1.0)  # both processes up
        rows = []
        for path in (PRODUCTS_PATH, ib.IPN_PATH):
            rows.append(await drive(route, port, path, args.concurrency, 1.0, args.duration))
        return rows
    finally:
        procs.stop_all()


def render(rows: list[Row], concurrency: int, duration: float) -> str:
    lines = [
        f"2 API processes (`serve --workers 2 --no-worker`), {concurrency} connections, "
        f"{duration:g} s per row:",
        "",
        "| route | request | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.route} | {'GET' if row.path == PRODUCTS_PATH else 'POST'} {row.path} "
            f"| {row.rate:.0f} | {ib.percentile(row.latencies_ms, 50):.1f} "
            f"| {ib.percentile(row.latencies_ms, 99):.1f} | {row.errors} |"
        )
    by = {(r.route, r.path): r for r in rows}
    for path in (PRODUCTS_PATH, ib.IPN_PATH):
        direct, pooled = by.get(("direct", path)), by.get(("pgbouncer", path))
        if direct and pooled and direct.rate:
            lines.append(f"\nPgBouncer / direct, {path}: {pooled.rate / direct.rate:.2f}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    server = os.environ.get("BENCH_DATABASE_URL", ib.DEFAULT_SERVER_URL)
    with tempfile.TemporaryDirectory(prefix="topology-bench-") as tmp:
        workdir = Path(tmp)
        async with ib.throwaway_database(server) as url:
            migrate = await asyncio.create_subprocess_exec(
                ib.cryptocheckout_command(),
                "migrate",
                env={**os.environ, "DATABASE_URL": url, "DATABASE_POOLED": "false"},
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            if await migrate.wait() != 0:
                raise SystemExit("migrate failed")
            with run_pgbouncer(server) as bouncer_port:
                from tests.support.pgbouncer import pooled_url

                rows = await run_route("direct", url, False, args, workdir)
                rows += await run_route(
                    "pgbouncer", pooled_url(url, bouncer_port), True, args, workdir
                )
    print(render(rows, args.concurrency, args.duration))
    return 1 if any(r.errors for r in rows) else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(main_async(args))
    return 130


if __name__ == "__main__":
    sys.exit(main())

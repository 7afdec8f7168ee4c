"""Benchmark: signed notifications while a flood of forged ones hits the IPN endpoint.

Run from the repository root:

    .venv/bin/python bench/forged_ipn_bench.py [--duration S] [--rate R] [--flood-connections N]

What it does (everything on 127.0.0.1, every step bounded in time):

1. creates a throwaway PostgreSQL database (as bench/ipn_bench.py does, on BENCH_DATABASE_URL),
   migrates it and starts `cryptocheckout serve --no-worker` as a separate process;
2. baseline: one client sends validly signed notifications at a fixed rate (open loop: a
   request leaves on schedule whether or not earlier ones were answered) for S seconds,
   and records each one's latency and answer;
3. for each flood kind, a separate load-generator process keeps N connections busy with
   forged bodies (closed loop, signature "f" * 128) while the same valid client runs again:
   - `large`: the drill's body, `{"junk": [[[[[{"a":[1]}]]]]], ... x 3000]}` (about 60 KB);
   - `capped`: the most an attacker can still make the server re-serialise: a body just
     under the canonical check's limits (16 KiB, 2,000 JSON values);
4. prints the valid notifications' p50/p99/max latency, how many were answered 200 within
   3 s (NOWPayments' limit), the ratio to the baseline, and what the flood got back.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ipn_bench as ib

from cryptocheckout.nowpayments.signature import (
    SIGNATURE_HEADER,
)

NOWPAYMENTS_DEADLINE_S = 3.0
# The canonical check's limits (nowpayments/signature.py), spelled here so that the same
# attack can be run against code that has no such limits.
CAPPED_BYTES = 16 * 1024
CAPPED_VALUES = 2000
FORGED_SIGNATURE = "f" * 128


def large_forged_body() -> bytes:
    return ('{"junk": [' + ",".join(['[[[[[{"a":[1]}]]]]]'] * 3000) + "]}").encode()


def capped_forged_body() -> bytes:
    """A body just under both limits: as much canonical work as the server will still do."""
    values = CAPPED_VALUES - 2  # the outer object and its array count too
    body = json.dumps({"junk": [{"k": "v"}] * (values // 2)}, separators=(",", ":")).encode()
    assert len(body) <= CAPPED_BYTES, len(body)
    return body


FLOODS = {"large": large_forged_body, "capped": capped_forged_body}


def _post(port: int, body: bytes, signature: str) -> bytes:
    head = (
        f"POST {ib.IPN_PATH} HTTP/1.1\r\nHost: {ib.HOST}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"{SIGNATURE_HEADER}: {signature}\r\n\r\n"
    )
    return head.encode() + body


# --------------------------------------------------------------------------------------
# The flood (its own process)
# --------------------------------------------------------------------------------------


async def _flood(port: int, kind: str, connections: int, conn: Connection) -> dict[str, int]:
    request = _post(port, FLOODS[kind](), FORGED_SIGNATURE)
    statuses: Counter[str] = Counter()
    stop = asyncio.Event()

    async def one() -> None:
        raw = ib.RawConnection(port)
        try:
            while not stop.is_set():
                try:
                    async with asyncio.timeout(ib.REQUEST_TIMEOUT_SECONDS):
                        status, _ = await raw.request(request)
                    statuses[str(status)] += 1
                except Exception as exc:
                    statuses[type(exc).__name__] += 1
                    await raw.close()
        finally:
            await raw.close()

    tasks = [asyncio.create_task(one()) for _ in range(connections)]
    conn.send("started")
    await asyncio.to_thread(conn.recv)  # the stop signal
    stop.set()
    await asyncio.wait(tasks, timeout=ib.REQUEST_TIMEOUT_SECONDS + 1)
    for task in tasks:
        task.cancel()
    return dict(statuses)


def flood_process(port: int, kind: str, connections: int, conn: Connection) -> None:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        conn.send(runner.run(_flood(port, kind, connections, conn)))
    conn.close()


# --------------------------------------------------------------------------------------
# The valid notifications (this process)
# --------------------------------------------------------------------------------------


@dataclass
class ValidRun:
    name: str
    sent: int = 0
    latencies_ms: list[float] = field(default_factory=list)  # answers 200
    failures: Counter[str] = field(default_factory=Counter)
    flood_statuses: dict[str, int] = field(default_factory=dict)
    flood_seconds: float = 0.0
    server_cpu: float = 0.0  # percent of one core

    @property
    def within_deadline(self) -> int:
        return sum(1 for ms in self.latencies_ms if ms <= NOWPAYMENTS_DEADLINE_S * 1000)

    def pct(self, p: float) -> float:
        return ib.percentile(self.latencies_ms, p)


def _valid_requests(port: int, count: int, offset: int) -> list[bytes]:
    now_ms = int(time.time() * 1000)
    requests = []
    for i in range(count):
        payment = ib.SeededPayment(
            payment_id=ib.PAYMENT_ID_BASE + offset + i,
            order_id=f"forged-bench-{offset + i}",
            pay_amount="0.00031",
            pay_address="bc1qforgedbench",
            purchase_id=4_400_000_000 + offset + i,
        )
        note = ib.make_notification(ib.ipn_payload(payment, "waiting", now_ms + i), ib.IPN_SECRET)
        requests.append(_post(port, note.body, note.signature))
    return requests


async def send_valid(port: int, run: ValidRun, requests: list[bytes], rate: float) -> None:
    idle: list[ib.RawConnection] = []

    async def one(request: bytes) -> None:
        raw = idle.pop() if idle else ib.RawConnection(port)
        began = time.monotonic()
        try:
            async with asyncio.timeout(ib.REQUEST_TIMEOUT_SECONDS):
                status, _ = await raw.request(request)
        except Exception as exc:
            run.failures[type(exc).__name__] += 1
            await raw.close()
            return
        if status == 200:
            run.latencies_ms.append((time.monotonic() - began) * 1000)
        else:
            run.failures[f"HTTP {status}"] += 1
        idle.append(raw)

    start = time.monotonic()
    tasks = []
    for n, request in enumerate(requests):
        await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(request)))
        run.sent += 1
    await asyncio.gather(*tasks)
    for raw in idle:
        await raw.close()


async def measure(
    port: int, server_pid: int, name: str, flood: str | None, args: argparse.Namespace, offset: int
) -> ValidRun:
    run = ValidRun(name)
    requests = _valid_requests(port, int(args.duration * args.rate), offset)
    parent = child = proc = None
    if flood is not None:
        parent, child = multiprocessing.Pipe()
        proc = multiprocessing.get_context("spawn").Process(
            target=flood_process, args=(port, flood, args.flood_connections, child)
        )
        proc.start()
        if not await asyncio.to_thread(parent.poll, ib.STARTUP_TIMEOUT_SECONDS):
            raise RuntimeError("the flood did not start")
        parent.recv()
        await asyncio.sleep(1.0)  # let the flood reach its pace before measuring
    flood_began = time.monotonic()
    cpu_before = ib._proc_ticks(server_pid)
    await send_valid(port, run, requests, args.rate)
    run.server_cpu = (
        100
        * (ib._proc_ticks(server_pid) - cpu_before)
        / ib.CLOCK_TICKS
        / (time.monotonic() - flood_began)
    )
    if parent is not None and proc is not None:
        parent.send("stop")
        if await asyncio.to_thread(parent.poll, ib.REQUEST_TIMEOUT_SECONDS + 5):
            run.flood_statuses = parent.recv()
        run.flood_seconds = time.monotonic() - flood_began + 1.0
        proc.join(5)
        if proc.is_alive():
            proc.kill()
    return run


def _fmt(value: float) -> str:
    if value != value:  # NaN: no valid notification was answered
        return "-"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def render(runs: list[ValidRun], args: argparse.Namespace, started: datetime) -> str:
    base = runs[0]
    lines = [
        f"Run of {started:%Y-%m-%d %H:%M} UTC at commit {args.code_version}: "
        f"`.venv/bin/python bench/forged_ipn_bench.py --duration {args.duration:g} "
        f"--rate {args.rate:g} --flood-connections {args.flood_connections}`; the machine "
        f"(2 cores, shared) was {args.background:.0f} % busy (of one core) just before the run.",
        "",
        "| run | valid sent | 200 within 3 s | p50 ms | p99 ms | max ms | p99 / baseline "
        "| flood answers (per s) | server CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for run in runs:
        flood = ", ".join(
            f"{k}: {v:,} ({v / run.flood_seconds:,.0f}/s)"
            for k, v in sorted(run.flood_statuses.items())
        )
        failures = "".join(f" ({k}: {v})" for k, v in sorted(run.failures.items()))
        lines.append(
            f"| {run.name} | {run.sent} | {run.within_deadline}{failures} | {_fmt(run.pct(50))} "
            f"| {_fmt(run.pct(99))} | {_fmt(max(run.latencies_ms, default=0))} "
            f"| {_fmt(run.pct(99) / base.pct(99))} | {flood or '-'} | {run.server_cpu:.0f} % |"
        )
    ok = all(run.within_deadline == run.sent and run.pct(99) < 1000 for run in runs)
    lines += [
        "",
        f"Target (valid p99 < 1 s, every valid notification answered 200 within 3 s): "
        f"{'met' if ok else 'NOT met'}.",
    ]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    started = datetime.now(UTC)
    args.code_version = await asyncio.to_thread(ib.code_version)
    server_url = os.environ.get("BENCH_DATABASE_URL", ib.DEFAULT_SERVER_URL)
    command = ib.cryptocheckout_command()
    runs: list[ValidRun] = []
    with tempfile.TemporaryDirectory(prefix="cc-forged-") as tmp:
        procs = ib.Processes(Path(tmp))
        async with ib.throwaway_database(server_url) as database_url:
            try:
                port = ib.free_port()
                env = ib.service_env(database_url, port)
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
                server = procs.start(
                    "server",
                    [command, "serve", "--no-worker", "--host", ib.HOST, "--port", str(port)],
                    env,
                )
                await ib.wait_ready(port, server, procs)
                args.background = await asyncio.to_thread(ib.background_load, 1.0)
                plan: list[tuple[str, str | None]] = [("no flood (baseline)", None)] + [
                    (f"{args.flood_connections} connections of `{kind}` forged bodies", kind)
                    for kind in args.floods
                ]
                for n, (name, flood) in enumerate(plan):
                    result = await measure(port, server.pid, name, flood, args, n * 100_000)
                    runs.append(result)
                    print(
                        f"{name}: {result.within_deadline}/{result.sent} valid answered 200 "
                        f"within 3 s; p50 {_fmt(result.pct(50))} ms, p99 {_fmt(result.pct(99))} "
                        f"ms, max {_fmt(max(result.latencies_ms, default=0))} ms; "
                        f"failures {dict(result.failures)}; flood {result.flood_statuses}",
                        flush=True,
                    )
                    if server.poll() is not None:
                        raise RuntimeError(f"the server exited:\n{procs.log_tail(server)}")
            finally:
                procs.stop_all()
    print()
    print(render(runs, args, started))
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (10)")
    parser.add_argument("--rate", type=float, default=20.0, help="valid notifications/s (20)")
    parser.add_argument("--flood-connections", type=int, default=64, help="default 64")
    parser.add_argument("--floods", nargs="+", choices=sorted(FLOODS), default=["large", "capped"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run(parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())

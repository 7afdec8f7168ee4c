"""Slow clients against the shop: how many connections they hold, and for how long.

Opens N connections to a real server (a separate process, SQLite, test mode) that each
send a request slowly - a third trickle their headers, a third send headers then trickle
the body of an IPN, a third connect and send nothing - one byte per second, for at most
`--duration` seconds. Prints, at each mark, how many of them the server still holds open
and what a normal `GET /healthz` got meanwhile.

    .venv/bin/python bench/slow_clients.py                   # the shop as `serve` runs it
    .venv/bin/python bench/slow_clients.py --server plain    # uvicorn's defaults, for comparison
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SERVER = """
import sys, uvicorn
from cryptocheckout.app import create_app
from cryptocheckout.config import Settings
from cryptocheckout.kit.serving import server_config
settings = Settings()
app = create_app(settings)
port = int(sys.argv[2])
if sys.argv[1] == "plain":  # how `cryptocheckout serve` ran uvicorn before the deadlines
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
else:
    config = server_config(app, host="127.0.0.1", port=port, log_level="warning",
                           header_timeout=settings.request_header_timeout_seconds)
uvicorn.Server(config).run()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def slow_client(port: int, kind: int, open_: set[int], me: int, stop: float) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    open_.add(me)
    body = b'{"payment_id": 1}'.ljust(1000)
    if kind == 0:
        head, slow = b"POST /api/webhooks/nowpayments HTTP/1.1\r\n", b"X-Pad: y\r\n" * 200
    elif kind == 1:
        head = (
            b"POST /api/webhooks/nowpayments HTTP/1.1\r\nHost: shop\r\n"
            b"Content-Type: application/json\r\nx-nowpayments-sig: " + b"f" * 128 + b"\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        slow = body
    else:
        head, slow = b"", b""

    async def trickle() -> None:
        writer.write(head)
        for byte in slow:
            await asyncio.sleep(1.0)
            writer.write(bytes([byte]))
            await writer.drain()

    sender = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(max(0.0, stop - time.monotonic())):
            await reader.read()  # returns once the server closes the connection
        open_.discard(me)
    except (TimeoutError, OSError):
        pass
    finally:
        sender.cancel()
        writer.close()


async def probe(port: int) -> str:
    started = time.monotonic()
    try:
        async with asyncio.timeout(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n")
            line = await reader.readline()
            writer.close()
        return f"{line.split(b' ')[1].decode()} in {(time.monotonic() - started) * 1000:.0f} ms"
    except (TimeoutError, OSError, IndexError) as exc:
        return f"failed ({type(exc).__name__})"


async def run(port: int, count: int, duration: float) -> None:
    open_: set[int] = set()
    started = time.monotonic()
    stop = started + duration
    clients = [asyncio.create_task(slow_client(port, n % 3, open_, n, stop)) for n in range(count)]
    marks = [m for m in (2, 5, 10, 15, 20, 30, 45, 60) if m <= duration]
    for mark in marks:
        await asyncio.sleep(max(0.0, started + mark - time.monotonic()))
        answer = await probe(port)
        print(f"  t={mark:>3}s  slow connections held: {len(open_):>5}  /healthz: {answer}")
    await asyncio.gather(*clients)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["shop", "plain"], default="shop")
    parser.add_argument("--connections", type=int, default=1500)
    parser.add_argument("--duration", type=float, default=30.0)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        env = {**os.environ, "DATABASE_URL": url, "CRYPTOCHECKOUT_MODE": "test"}
        env.setdefault("NOWPAYMENTS_IPN_SECRET", "bench-secret")
        subprocess.run(
            [sys.executable, "-m", "cryptocheckout", "migrate"], env=env, check=True, cwd=tmp
        )
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER, args.server, str(port)], env=env, cwd=tmp
        )
        try:
            for _ in range(200):
                with socket.socket() as sock:
                    if sock.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
            print(
                f"{args.connections} slow clients, one byte a second, for {args.duration:g} s;"
                f" server: {args.server}"
            )
            asyncio.run(run(port, args.connections, args.duration))
        finally:
            server.terminate()
            server.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())

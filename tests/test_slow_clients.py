"""Slow clients cannot hold the server: deadlines for headers and body, a connection cap.

A real uvicorn server configured as `cryptocheckout serve` configures it, and raw sockets
that trickle a request one byte at a time (a bounded number, for a bounded time).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx

from cryptocheckout.app import create_app
from cryptocheckout.config import Settings
from cryptocheckout.kit.serving import server_config
from tests.support.servers import free_port, serve_config_in_thread

IPN = "/api/webhooks/nowpayments"
TRICKLERS = 20  # of each kind
TRICKLE_EVERY = 0.2
GIVE_UP_AFTER = 15.0  # the test's own bound: a trickler still open then was held


async def _trickle(host: str, port: int, head: bytes, slow: bytes) -> bytes:
    """Sends `head` at once, then `slow` a byte at a time; returns what the server sent
    before it closed the connection (b"" if it closed without answering)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(head)

    async def send_slowly() -> None:
        for byte in slow:
            await asyncio.sleep(TRICKLE_EVERY)
            writer.write(bytes([byte]))
            await writer.drain()

    sender = asyncio.create_task(send_slowly())
    received = b""
    try:
        async with asyncio.timeout(GIVE_UP_AFTER):
            while chunk := await reader.read(65536):  # until the server closes
                received += chunk
                # Stop sending once answered: bytes arriving after the server closed make
                # its kernel reset the connection, which can discard the answer unread.
                sender.cancel()
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        sender.cancel()
        writer.close()
    return received


async def test_slow_headers_and_slow_bodies_are_cut_off(settings: Settings) -> None:
    app_settings = settings.model_copy(update={"request_body_timeout_seconds": 1.0})
    config = server_config(
        create_app(app_settings),
        host="127.0.0.1",
        port=free_port(),
        header_timeout=1.0,
        log_level="warning",
        loop="asyncio",
    )
    with serve_config_in_thread(config) as base:
        host, port = urlsplit(base).hostname or "", urlsplit(base).port or 0
        body = b'{"payment_id": 1, "payment_status": "waiting"}'.ljust(200)
        slow_headers = [
            _trickle(host, port, b"POST " + IPN.encode() + b" HTTP/1.1\r\n", b"Host: x\r\n" * 20)
            for _ in range(TRICKLERS)
        ]
        slow_bodies = [
            _trickle(
                host,
                port,
                b"POST " + IPN.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                b"x-nowpayments-sig: " + b"f" * 128 + b"\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body),
                # A few bytes, then silence: a byte arriving after the server answered and
                # closed would make its kernel reset the connection, losing the answer.
                body[:3],
            )
            for _ in range(TRICKLERS)
        ]
        results = await asyncio.gather(*slow_headers, *slow_bodies)
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/healthz")).status_code == 200
    header_results, body_results = results[:TRICKLERS], results[TRICKLERS:]
    # Every connection was closed by the server well before the test's own bound.
    assert header_results == [b""] * TRICKLERS
    for answer in body_results:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:100]
        assert b"connection: close" in answer.lower()


async def test_connections_over_the_limit_are_answered_503(settings: Settings) -> None:
    config = server_config(
        create_app(settings),
        host="127.0.0.1",
        port=free_port(),
        limit_concurrency=4,
        log_level="error",
        loop="asyncio",
    )
    with serve_config_in_thread(config) as base:
        host, port = urlsplit(base).hostname or "", urlsplit(base).port or 0
        idle = [await asyncio.open_connection(host, port) for _ in range(4)]
        await asyncio.sleep(0.2)  # let the server accept them
        async with httpx.AsyncClient(base_url=base) as client:
            assert (await client.get("/healthz")).status_code == 503
            for _, writer in idle:
                writer.close()
            await asyncio.sleep(0.2)
            assert (await client.get("/healthz")).status_code == 200

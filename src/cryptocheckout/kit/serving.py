"""How the service faces the network: uvicorn's settings and the request deadlines.

A client that sends its request slowly holds a connection (and, once the app reads the
body, a task) for as long as it likes unless something bounds it. Three bounds:

- headers: a request's headers must be complete within `HEADER_TIMEOUT_SECONDS` of the
  connection opening or of the previous response (uvicorn has no such timer of its own:
  its keep-alive timer is disarmed by every byte received);
- body: `BodyDeadline` gives the whole body `BODY_TIMEOUT_SECONDS` from the headers; past
  that the answer is 408 with `Connection: close`;
- count: `limit_concurrency` connections at once; past that uvicorn answers 503.

`server_config` is the one place these are set, for `cryptocheckout serve` and the demo.
"""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

try:  # uvicorn[standard]'s faster parser, the one uvicorn picks when it is installed
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _BaseProtocol
except ImportError:  # pragma: no cover - httptools is a dependency of uvicorn[standard]
    _BaseProtocol = H11Protocol  # type: ignore[assignment,misc]

# Defaults; `cryptocheckout serve` takes REQUEST_HEADER_TIMEOUT_SECONDS and
# REQUEST_BODY_TIMEOUT_SECONDS from the settings.
HEADER_TIMEOUT_SECONDS = 10.0
BODY_TIMEOUT_SECONDS = 15.0
KEEP_ALIVE_SECONDS = 5
# Connections (and requests) at once per process; more are answered 503 by uvicorn.
LIMIT_CONCURRENCY = 1000
# Largest request head h11 buffers (uvicorn's h11 default is 16 KiB; httptools caps at 80 KiB).
MAX_HEADER_BYTES = 16 * 1024


class HeaderDeadlineProtocol(_BaseProtocol):
    """uvicorn's HTTP protocol with a deadline for each request's headers."""

    header_timeout: float = HEADER_TIMEOUT_SECONDS
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        # The request being waited for is the one after the current cycle: a new cycle
        # (a request whose headers arrived) before the deadline cancels the close.
        self._header_timer = self.loop.call_later(
            self.header_timeout, self._headers_overdue, self.cycle
        )

    def _headers_overdue(self, cycle_then: object) -> None:
        if self.cycle is cycle_then and not self.transport.is_closing():
            self.transport.close()


class BodyTimeout(HTTPException):
    """Raised from `receive`, so the app's HTTP error handler answers 408 as a problem."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            408,
            f"The request body did not arrive within {seconds:g} seconds.",
            headers={"Connection": "close"},
        )


class BodyDeadline:
    """Pure ASGI middleware: the whole request body must arrive within `seconds`."""

    def __init__(self, app: ASGIApp, seconds: float = BODY_TIMEOUT_SECONDS) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        body_done = False
        response_started = False

        async def bounded_receive() -> Message:
            nonlocal body_done
            if body_done:  # after the body only a disconnect can come: no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(self.seconds) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracking_send)
        except BodyTimeout as exc:  # raised where no handler answered it (a middleware)
            if response_started:
                raise
            await _send_408(send, str(exc.detail))


async def _send_408(send: Send, detail: str) -> None:
    import json

    body = json.dumps(
        {"type": "request-timeout", "title": "Request Timeout", "status": 408, "detail": detail}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 408,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def server_config(
    app: Any,
    *,
    host: str,
    port: int,
    header_timeout: float = HEADER_TIMEOUT_SECONDS,
    **overrides: Any,
) -> uvicorn.Config:
    """uvicorn's settings for the shop: no `server` banner, bounded connections."""
    protocol = type(
        "HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout": header_timeout}
    )
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "http": protocol,  # `serve --workers N` names HeaderDeadlineProtocol instead
        "server_header": False,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        "limit_concurrency": LIMIT_CONCURRENCY,
        "h11_max_incomplete_event_size": MAX_HEADER_BYTES,
        "log_level": "info",
        # uvicorn's access log prints query strings (order tokens): ours (kit/accesslog.py)
        # does not.
        "access_log": False,
    }
    options.update(overrides)
    return uvicorn.Config(app, **options)

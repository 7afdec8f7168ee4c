"""Requests that connect to the addresses that were checked, never to a fresh lookup.

`addresses.checked_addresses` resolves an endpoint's host once and checks every address; a
second lookup by httpx could answer differently (a short-TTL name "rebinds" to 127.0.0.1 or
169.254.169.254 between the check and the connect). So the sender sets the checked addresses
for the request in `pinned` and this transport's network backend connects to them instead of
resolving the host. Only the TCP connect changes: the request keeps its URL, so the Host
header, TLS SNI and the certificate check stay on the hostname.

A context variable rather than a per-request transport keeps one connection pool; httpcore
opens a connection in the task that sends the request, so the task's pin is the one seen.
A keep-alive connection reused later goes to an address that was checked when it opened.
"""

from __future__ import annotations

import contextlib
import contextvars
import typing
from collections.abc import Iterable

import httpcore
import httpx

pinned: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar(
    "pinned", default=None
)


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the pinned addresses in turn; refuses to connect without a pin."""

    def __init__(self) -> None:
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = pinned.get()
        if not addresses:
            raise httpcore.ConnectError(f"no checked address to connect to for {host!r}")
        *others, last = addresses
        for address in others:
            with contextlib.suppress(httpcore.ConnectError, httpcore.ConnectTimeout):
                return await self._backend.connect_tcp(
                    address, port, timeout, local_address, socket_options
                )
        return await self._backend.connect_tcp(last, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("webhooks are sent over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, whose connection pool connects through `PinnedBackend`."""

    def __init__(self, *, limits: httpx.Limits, **kwargs: typing.Any) -> None:
        super().__init__(limits=limits, **kwargs)
        # The pool httpx built, built again with the backend (httpx passes none through).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinnedBackend(),
        )

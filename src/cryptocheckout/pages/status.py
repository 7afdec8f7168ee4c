"""The status poll's reads, batched: every poll waiting at one moment shares one query.

A thousand open order pages poll every 2.5 s. Each request puts its order id here and waits;
one reader task takes all ids waiting at that moment, reads them in one query on one pooled
connection, and answers each. Under load the batches grow instead of the queue of
connections, so the poll costs the database one round trip per batch, not per page, and
leaves the pool to the IPN endpoint and the checkout.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Receive, Scope, Send

from cryptocheckout.kit.security import tokens_match
from cryptocheckout.pages.queries import StatusRow, status_rows
from cryptocheckout.pages.security import order_cookie_name
from cryptocheckout.pages.views import FINAL_KINDS, badge, state_key, state_kind

MAX_BATCH = 500


class StatusReader:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._waiting: dict[uuid.UUID, list[asyncio.Future[StatusRow | None]]] = {}
        self._reader: asyncio.Task[None] | None = None

    async def get(self, order_id: uuid.UUID) -> StatusRow | None:
        future: asyncio.Future[StatusRow | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(order_id, []).append(future)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_all())
        return await future

    async def _read_all(self) -> None:
        while self._waiting:
            ids = list(self._waiting)[:MAX_BATCH]
            batch = {order_id: self._waiting.pop(order_id) for order_id in ids}
            try:
                async with self._engine.connect() as conn:
                    found = await status_rows(conn, ids)
            except Exception as exc:  # every waiting request gets the error (a 503)
                for futures in batch.values():
                    for future in futures:
                        if not future.done():
                            future.set_exception(exc)
                continue
            for order_id, futures in batch.items():
                for future in futures:
                    if not future.done():  # its request may have been cancelled
                        future.set_result(found.get(order_id))


STATUS_PATH = re.compile(r"/orders/([0-9a-fA-F-]{36})/status")
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
]
_NOT_FOUND = b'{"status":null}'


def _cookie(headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    wanted = name.encode() + b"="
    for header, value in headers:
        if header != b"cookie":
            continue
        for part in value.split(b";"):
            part = part.strip()
            if part.startswith(wanted):
                return part[len(wanted) :].decode("latin-1")
    return None


async def status_body(
    state: Any, order_id: str, headers: list[tuple[bytes, bytes]]
) -> bytes | None:
    """The poll's answer, or None (404) without the order's cookie or with a wrong one."""
    try:
        parsed = uuid.UUID(order_id)
    except ValueError:
        return None
    token = _cookie(headers, order_cookie_name(parsed))
    if token is None:
        return None
    if not hasattr(state, "status_reader"):
        state.status_reader = StatusReader(state.engine)
    reader: StatusReader = state.status_reader
    row = await reader.get(parsed)
    if row is None or not tokens_match(token, row.access_token):
        return None
    kind = state_kind(row.status, row.payment_status, row.payment_kind)
    look, label = badge(kind, row.status)
    body = {
        "status": row.status.value,
        "badge": look,
        "label": label,
        "key": state_key(kind, row.status, row.payment_id, row.payment_status, row.confirmations),
        "final": kind in FINAL_KINDS,
    }
    return json.dumps(body, separators=(",", ":")).encode()


class OrderStatusFastPath:
    """Serves `GET /orders/{id}/status` before FastAPI's routing, like the IPN endpoint.

    Every open order page polls it; routing through some forty routes and the dependency
    layer cost more than the batched query itself. Inside the access log and body limit.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (
            STATUS_PATH.fullmatch(scope["path"])
            if scope["type"] == "http" and scope["method"] == "GET"
            else None
        )
        if match is None:
            await self.app(scope, receive, send)
            return
        body = await status_body(scope["app"].state, match.group(1), scope["headers"])
        status = 200 if body is not None else 404
        payload = body if body is not None else _NOT_FOUND
        headers = [*_HEADERS, (b"content-length", str(len(payload)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

"""Refuse oversized request bodies with 413 before reading them."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyTooLarge(HTTPException):
    """Raised from `receive`, so the app's HTTP error handler answers 413 as a problem."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"The body is over {max_bytes} bytes.")


class BodySizeLimit:
    """Pure ASGI middleware: a declared Content-Length over the limit is refused unread;
    a chunked body is counted as it streams and cut off at the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0:
                    await _refuse(send, 400, "The Content-Length header is not a number.")
                    return
                if declared > self.max_bytes:
                    await _refuse(send, 413, f"The body is over {self.max_bytes} bytes.")
                    return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not response_started:
                await _refuse(send, 413, f"The body is over {self.max_bytes} bytes.")


async def _refuse(send: Send, status: int, detail: str) -> None:
    title = "Content Too Large" if status == 413 else "Bad Request"
    body = json.dumps(
        {
            "type": title.lower().replace(" ", "-"),
            "title": title,
            "status": status,
            "detail": detail,
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

"""A webhook receiver on loopback: records what arrives, answers as a test tells it to."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from standardwebhooks.webhooks import Webhook

from tests.support.servers import serve_in_thread


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def verify(self, secret: str) -> Any:
        """The body, parsed, once the Standard Webhooks reference library accepts it."""
        return Webhook(secret).verify(self.body, self.headers)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


@dataclass
class Receiver:
    """An ASGI app: every request is recorded; `answers[path]` is popped per request (else 200).

    A path in `hold` keeps its requests waiting until the event is set (a hanging endpoint).
    """

    base_url: str = ""
    received: list[Received] = field(default_factory=list)
    answers: dict[str, list[int]] = field(default_factory=dict)
    hold: dict[str, threading.Event] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        self.received.append(Received(path, headers, body))
        held = self.hold.get(path)
        if held is not None:
            while not held.is_set():
                await asyncio.sleep(0.02)
        queued = self.answers.get(path)
        status = queued.pop(0) if queued else 200
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": f"answer {status}".encode()})


@contextmanager
def receiver() -> Iterator[Receiver]:
    app = Receiver()
    with serve_in_thread(app, lifespan="off") as base_url:
        app.base_url = base_url
        yield app

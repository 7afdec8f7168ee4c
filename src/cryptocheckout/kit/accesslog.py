"""One access-log line per request, without the query string.

The customer's order token may travel as `?token=`; uvicorn's own access log prints query
strings, so it is turned off and this one logs method, path, status and duration only.
The path is the client's text: its control characters are escaped (a `%0A` in the path
must not start a forged line of its own). A delivery link carries its token in the path,
so that segment is masked.
"""

from __future__ import annotations

import logging
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cryptocheckout.kit.logsafe import escape_control

logger = logging.getLogger("cryptocheckout.access")
_DELIVERY_TOKEN = re.compile(r"^/delivery/(?!assets/)[^/]+")


def loggable_path(path: str) -> str:
    """The path without credentials in it: `/delivery/<token>/...` -> `/delivery/***/...`."""
    return _DELIVERY_TOKEN.sub("/delivery/***", path)


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not logger.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # An exception escaping the app becomes a 500; a request that ended with no answer
        # (the client went away mid-body) is logged as 499, nginx's "client closed request".
        status = 500

        answered = False

        async def tracking_send(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status = message["status"]
                answered = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
            if not answered:
                status = 499
        finally:
            logger.info(
                "%s %s %d %.1fms",
                escape_control(scope["method"]),
                escape_control(loggable_path(scope["path"])),
                status,
                (time.perf_counter() - started) * 1000,
            )

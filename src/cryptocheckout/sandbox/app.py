"""Assembles the sandbox: the ``/v1`` API, the ``/sandbox`` control API and the pages."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cryptocheckout.sandbox import api, control, pages
from cryptocheckout.sandbox.auth import API_KEY_HEADER, key_state
from cryptocheckout.sandbox.config import SandboxConfig
from cryptocheckout.sandbox.runtime import SandboxRuntime
from cryptocheckout.sandbox.state import RequestRecord, utcnow
from cryptocheckout.sandbox.wire import ApiError, ErrorCode, error_response

logger = logging.getLogger("cryptocheckout.sandbox")

# Request bodies kept in the request log are cut here; API bodies are small.
MAX_LOGGED_BODY = 16 * 1024


class RequestLog:
    """Gives every answer an ``x-request-id`` and records ``/v1`` calls for the control API.

    The record says whether the API key was valid, missing or wrong, never what it was,
    and leaves out the body of ``/v1/auth`` (it holds the account password).
    """

    def __init__(self, app: ASGIApp, rt: SandboxRuntime) -> None:
        self.app = app
        self.rt = rt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = str(uuid.uuid4())
        chunks: list[bytes] = []
        status = 500

        async def receive_logged() -> Message:
            message = await receive()
            if message["type"] == "http.request" and sum(map(len, chunks)) < MAX_LOGGED_BODY:
                chunks.append(message.get("body", b""))
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append("x-request-id", request_id)
            await send(message)

        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send_with_id(message)

        try:
            await self.app(scope, receive_logged, send_tracked)
        except Exception:
            # Answered here rather than by Starlette's outer error middleware, so even a
            # defect's 500 has the NOWPayments error shape and a request id.
            logger.exception("sandbox defect on %s %s", scope["method"], scope["path"])
            if started:
                raise
            error = ApiError(500, ErrorCode.INTERNAL_ERROR, "Internal server error")
            await error_response(error)(scope, receive, send_with_id)
        finally:
            path: str = scope["path"]
            if path.startswith("/v1"):
                self._record(scope, request_id, status, b"".join(chunks))

    def _record(self, scope: Scope, request_id: str, status: int, body: bytes) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path: str = scope["path"]
        logged_body = None
        if body and path.rstrip("/") != "/v1/auth":
            logged_body = body[:MAX_LOGGED_BODY].decode("utf-8", "replace")
        with self.rt.store.lock:
            self.rt.store.requests.append(
                RequestRecord(
                    at=utcnow(),
                    request_id=request_id,
                    method=scope["method"],
                    path=path,
                    query=scope.get("query_string", b"").decode("latin-1"),
                    status=status,
                    api_key=key_state(headers.get(API_KEY_HEADER), self.rt.config.api_key),
                    bearer=headers.get("authorization", "").lower().startswith("bearer "),
                    content_type=headers.get("content-type"),
                    body=logged_body,
                )
            )


def _is_page(path: str) -> bool:
    """Pages answer errors as HTML; the API and the control API in NOWPayments' JSON shape."""
    return path.startswith("/sandbox/pay/") or not path.startswith(("/v1", "/sandbox"))


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)  # noqa: S101 - registered for ApiError only
    if _is_page(request.url.path):
        return pages.message_page(exc.status_code, "Request refused", exc.message)
    return error_response(exc)


async def _injected_fault(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, api.InjectedFault)  # noqa: S101 - registered for InjectedFault only
    return exc.response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for HTTPException only
    if exc.status_code == 404:
        error = ApiError(404, ErrorCode.NOT_FOUND, f"Cannot {request.method} {request.url.path}")
    else:
        error = ApiError(exc.status_code, f"HTTP_{exc.status_code}", str(exc.detail))
    if _is_page(request.url.path):
        return pages.message_page(error.status_code, "Not found", error.message)
    return error_response(error)


async def _validation_error(request: Request, exc: Exception) -> Response:
    return error_response(ApiError(400, ErrorCode.INVALID_REQUEST_PARAMS, str(exc)[:300]))


def create_sandbox_app(config: SandboxConfig) -> FastAPI:
    """A fresh sandbox with empty state; background work stops with the app's lifespan."""
    rt = SandboxRuntime.build(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        rt.simulation.cancel_all()
        await rt.notifier.aclose()

    app = FastAPI(
        title="NOWPayments offline sandbox",
        lifespan=lifespan,
        # The interactive docs load scripts from a CDN; the sandbox must work offline.
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.sandbox = rt
    app.add_middleware(RequestLog, rt=rt)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(api.InjectedFault, _injected_fault)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.include_router(api.router)
    app.include_router(control.router)
    app.include_router(pages.router)
    return app

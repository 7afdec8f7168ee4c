"""The IPN endpoint: verify, store durably, acknowledge. Nothing else happens here.

Applying a notification (finding its payment, moving statuses, enqueueing fulfilment) is the
worker's job: NOWPayments allows 3 seconds for the answer, and a slow or failing step must
never turn a delivered notification into a lost one.

This is the one endpoint with a latency budget set by someone else, and the busiest, so it is
served by a lean ASGI handler (`IpnFastPath`) in front of FastAPI's routing; the FastAPI
route below runs the same code and describes the endpoint in the OpenAPI document.

The signature is checked against the raw bytes first (one HMAC). Only a body that does not
match them, and is small enough, is re-written in the canonical forms, within a budget of
the event loop's time (`CanonicalCheckBudget`): unsigned work cannot starve signed
notifications.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.metrics import REGISTRY
from cryptocheckout.kit.problems import Problem, problem_response
from cryptocheckout.nowpayments.signature import SIGNATURE_HEADER, IpnCheck, check_ipn
from cryptocheckout.webhooks.ingest import (
    NotificationStore,
    Rejected,
    StoreUnavailable,
    TooDeep,
    incoming,
)

PATH = "/api/webhooks/nowpayments"
_SIGNATURE_HEADER = SIGNATURE_HEADER.encode()
_STORED = b'{"status":"stored"}'
_DUPLICATE = b'{"status":"duplicate"}'

# Bodies whose signature does not match their raw bytes are re-written in the canonical
# forms in Python (see nowpayments/signature.py), which anyone can ask for without the
# secret. That work is capped per body by the signature module (a few ms at most) and here
# in total: it may take this share of the event loop's time, in bursts of at most this; past
# it, such bodies are answered 503 unchecked (NOWPayments retries a real one later).
# A worker thread would not help: the work is pure Python, and a busy thread holding the
# GIL delays every I/O step of the event loop by up to the switch interval.
CANONICAL_CHECKS = REGISTRY.counter(
    "cryptocheckout_ipn_canonical_checks_total",
    "Signatures that did not match the raw body: canonical forms tried, or skipped and why",
)
CANONICAL_TIME_SHARE = 0.1
CANONICAL_BURST_SECONDS = 0.1

router = APIRouter(tags=["webhooks"])


class CanonicalCheckBudget:
    """Seconds of canonical checking still allowed; refills at CANONICAL_TIME_SHARE per
    second, up to CANONICAL_BURST_SECONDS."""

    def __init__(self) -> None:
        self._available = CANONICAL_BURST_SECONDS
        self._updated = time.monotonic()

    def check(self, raw: bytes, signature: str | None, secret: str) -> IpnCheck | None:
        """The full check, or None when the budget is spent."""
        now = time.monotonic()
        refill = (now - self._updated) * CANONICAL_TIME_SHARE
        self._available = min(CANONICAL_BURST_SECONDS, self._available + refill)
        self._updated = now
        if self._available <= 0:
            return None
        began = time.perf_counter()
        try:
            return check_ipn(raw, signature, secret)
        finally:
            self._available -= time.perf_counter() - began


def _budget(state: Any) -> CanonicalCheckBudget:
    budget: CanonicalCheckBudget | None = getattr(state, "canonical_check_budget", None)
    if budget is None:
        budget = state.canonical_check_budget = CanonicalCheckBudget()
    return budget


def _unavailable(detail: str) -> Response:
    return problem_response(Problem(503, detail, type_="unavailable", headers={"Retry-After": "5"}))


async def ipn_response(
    state: Any, raw: bytes, signature: str | None, remote_addr: str | None
) -> Response:
    """The whole endpoint: the answer to one delivery of `raw` signed with `signature`."""
    store: NotificationStore = state.notification_store
    secret: str = state.settings.nowpayments_ipn_secret.get_secret_value()

    def reject(status: int, reason: str, detail: str, type_: str) -> Response:
        store.reject(
            Rejected(
                reason=reason,
                remote_addr=remote_addr,
                body_sha256=hashlib.sha256(raw).hexdigest(),
                body_size=len(raw),
                received_at=utcnow(),
            )
        )
        return problem_response(Problem(status, detail, type_=type_))

    check = check_ipn(raw, signature, secret, canonical=False)
    if check.canonical_pending:
        deferred = _budget(state).check(raw, signature, secret)
        if deferred is None:
            return _unavailable("Too many unsigned notifications; please deliver it again.")
        check = deferred
    if check.canonical is not None:
        CANONICAL_CHECKS.inc(outcome=check.canonical)
    if not check.signature_valid:
        reason = "missing signature" if not signature else "invalid signature"
        return reject(401, reason, f"The notification has a {reason}.", "invalid-signature")
    if check.payload is None:
        return reject(
            400,
            "body is not a JSON object",
            "The notification body is not a JSON object.",
            "bad-notification",
        )
    try:
        item = incoming(raw, check.payload)
    except TooDeep:
        return reject(
            400,
            "body nested too deeply",
            "The notification body is nested too deeply.",
            "bad-notification",
        )
    try:
        new = await store.store(item)
    except StoreUnavailable:
        return _unavailable("The notification could not be stored; please deliver it again.")
    return Response(_STORED if new else _DUPLICATE, media_type="application/json")


@router.post(
    PATH,
    responses={
        200: {
            "description": "Durably stored (`stored`), or an exact redelivery (`duplicate`).",
            "content": {"application/json": {"example": {"status": "stored"}}},
        },
        400: {"description": "The body is not a JSON object."},
        401: {"description": "Missing or invalid x-nowpayments-sig."},
        413: {"description": "The body is over 64 KiB."},
        503: {
            "description": "The notification could not be stored, or too many bodies "
            "not signed as delivered are being checked; NOWPayments retries."
        },
    },
)
async def receive_nowpayments_ipn(request: Request) -> Response:
    raw = await request.body()
    remote = request.client.host if request.client else None
    return await ipn_response(request.app.state, raw, request.headers.get(SIGNATURE_HEADER), remote)


class IpnFastPath:
    """Serves POST /api/webhooks/nowpayments before FastAPI's routing and dependency layers.

    It sits inside the body-size limit and the access log like every other request.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # With or without a trailing slash: NOWPayments may not follow a redirect on a POST.
        if (
            scope["type"] != "http"
            or scope["path"] not in (PATH, PATH + "/")
            or scope["method"] != "POST"
        ):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        signature = None
        for name, value in scope["headers"]:
            if name == _SIGNATURE_HEADER:  # ASGI header names arrive lower-cased
                signature = value.decode("latin-1")
                break
        client = scope.get("client")
        response = await ipn_response(
            scope["app"].state, b"".join(chunks), signature, client[0] if client else None
        )
        await response(scope, receive, send)

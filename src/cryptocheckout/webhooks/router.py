"""The IPN endpoint: verify, store durably, acknowledge. Nothing else happens here.

Applying a notification (finding its payment, moving statuses, enqueueing fulfilment) is the
worker's job: NOWPayments allows 3 seconds for the answer, and a slow or failing step must
never turn a delivered notification into a lost one.
"""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.problems import Problem
from cryptocheckout.nowpayments.signature import SIGNATURE_HEADER, check_ipn
from cryptocheckout.webhooks.ingest import (
    NotificationStore,
    Rejected,
    StoreUnavailable,
    TooDeep,
    incoming,
)

router = APIRouter(tags=["webhooks"])


def _reject(request: Request, raw: bytes, reason: str) -> None:
    store: NotificationStore = request.app.state.notification_store
    store.reject(
        Rejected(
            reason=reason,
            remote_addr=request.client.host if request.client else None,
            body_sha256=hashlib.sha256(raw).hexdigest(),
            body_size=len(raw),
            received_at=utcnow(),
        )
    )


@router.post(
    "/api/webhooks/nowpayments",
    responses={
        400: {"description": "The body is not a JSON object."},
        401: {"description": "Missing or invalid x-nowpayments-sig."},
        413: {"description": "The body is over 64 KiB."},
        503: {"description": "The notification could not be stored; NOWPayments retries."},
    },
)
async def receive_nowpayments_ipn(request: Request) -> JSONResponse:
    raw = await request.body()
    secret: str = request.app.state.settings.nowpayments_ipn_secret.get_secret_value()
    signature = request.headers.get(SIGNATURE_HEADER)
    check = check_ipn(raw, signature, secret)
    if not check.signature_valid:
        reason = "missing signature" if not signature else "invalid signature"
        _reject(request, raw, reason)
        raise Problem(401, f"The notification has a {reason}.", type_="invalid-signature")
    if check.payload is None:
        _reject(request, raw, "body is not a JSON object")
        raise Problem(400, "The notification body is not a JSON object.", type_="bad-notification")
    try:
        item = incoming(raw, check.payload)
    except TooDeep:
        _reject(request, raw, "body nested too deeply")
        raise Problem(
            400, "The notification body is nested too deeply.", type_="bad-notification"
        ) from None
    store: NotificationStore = request.app.state.notification_store
    try:
        new = await store.store(item)
    except StoreUnavailable as exc:
        raise Problem(
            503,
            "The notification could not be stored; please deliver it again.",
            type_="unavailable",
            headers={"Retry-After": "5"},
        ) from exc
    return JSONResponse({"status": "stored" if new else "duplicate"})

"""What is kept of a delivery: the verified notification, or a note that it was refused."""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptocheckout.kit.clock import utcnow
from cryptocheckout.nowpayments.models import parse_id

# Real notifications nest two levels (the fee object). Far deeper bodies are refused before
# any recursive code (fingerprint, storage) could run out of stack on them.
MAX_NESTING = 32


class TooDeep(ValueError):
    pass


@dataclass
class Incoming:
    """A verified notification on its way to `webhook_logs`."""

    fingerprint: str
    external_id: str | None
    provider_status: str | None
    raw_body: str
    payload: dict[str, Any] = field(repr=False)
    received_at: datetime
    future: asyncio.Future[bool] | None = field(repr=False, default=None)

    def storable_payload(self) -> dict[str, Any]:
        stored: dict[str, Any] = storable(self.payload)
        return stored


@dataclass
class Rejected:
    """A refused delivery, for the bounded `rejected_webhooks` log (no body is kept)."""

    reason: str
    remote_addr: str | None
    body_sha256: str
    body_size: int
    received_at: datetime


def fingerprint(payload: dict[str, Any]) -> str:
    """SHA-256 of the parsed content written with sorted keys, not of the delivered bytes:
    a redelivery matches even if a proxy re-spaced or re-ordered it. (Only determinism
    matters here, so Python's own JSON writer does; the signature needs JavaScript's, see
    nowpayments/signature.py.)"""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def storable(value: Any) -> Any:
    """`value` cleaned for JSONB, which refuses \\u0000, lone surrogates and non-finite
    numbers. Only the display copy (raw_payload) is cleaned; raw_body stays the truth."""
    if isinstance(value, str):
        cleaned = value.replace("\x00", "\ufffd")
        return cleaned.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {storable(str(k)): storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [storable(v) for v in value]
    return value


def _check_nesting(payload: Any) -> None:
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_NESTING:
            raise TooDeep(f"nested deeper than {MAX_NESTING} levels")
        children = value.values() if isinstance(value, dict) else value
        if isinstance(value, dict | list):
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def incoming(raw_body: bytes, payload: dict[str, Any]) -> Incoming:
    """What is stored of a verified notification. Raises TooDeep for absurd nesting."""
    _check_nesting(payload)
    status = payload.get("payment_status")
    payment_id = payload.get("payment_id")
    # The verifier parsed numbers the JavaScript way (as doubles); ids are whole numbers.
    if isinstance(payment_id, float) and payment_id.is_integer():
        payment_id = int(payment_id)
    try:
        external_id = parse_id(payment_id)
    except ValueError:
        external_id = None
    return Incoming(
        fingerprint=fingerprint(payload),
        external_id=storable(external_id[:64]) if external_id else None,
        provider_status=storable(status[:32]) if isinstance(status, str) else None,
        raw_body=raw_body.decode("utf-8", "replace"),
        payload=payload,
        received_at=utcnow(),
    )

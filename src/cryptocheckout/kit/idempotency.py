"""Idempotency-Key handling, the same for every endpoint that creates something.

The key is claimed in its own short transaction (so a concurrent request with the same key
sees it and gets 409). Where the response is stored depends on the work, in two named modes:

- `run_idempotent`: the work is one transaction, and the response is stored in that *same*
  transaction, so a stored response always matches committed data (orders).
- `run_idempotent_self_committing`: the work commits on its own, more than once, because it
  calls another service between its transactions (a payment is recorded, NOWPayments is
  asked, the answer is recorded). The response is stored after the work, in its own
  transaction; if the process dies in between, the claim runs out and a retry runs the work
  again, which must therefore be idempotent itself (a payment: one open payment per order).

A request that fails releases its claim, so the client can retry with the same key; a claim
left behind by a crashed process can be taken over once its lock runs out.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cryptocheckout.kit.clock import utcnow
from cryptocheckout.kit.db import unit_of_work
from cryptocheckout.kit.idempotency_models import IdempotencyKey, IdempotencyState
from cryptocheckout.kit.problems import Problem, field_error, validation_problem

KEY_TTL = timedelta(hours=24)
# How long an in-progress claim blocks others before it counts as abandoned.
CLAIM_LOCK = timedelta(seconds=60)
_VALID_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")

Response = tuple[int, dict[str, Any]]
# Work done in the caller's transaction (which also stores the response).
Operation = Callable[[AsyncSession], Awaitable[Response]]
# Work that commits on its own.
SelfCommittingOperation = Callable[[], Awaitable[Response]]


@dataclass(frozen=True)
class Replay:
    status: int
    body: dict[str, Any]


def request_fingerprint(*parts: Any) -> str:
    """A hash of the request's meaning: JSON with sorted keys, so spacing does not matter."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def check_key(key: str) -> str:
    if not _VALID_KEY.match(key):
        raise validation_problem(
            "The Idempotency-Key header is not valid.",
            [field_error(["header", "Idempotency-Key"], "must be 1-255 visible ASCII characters")],
        )
    return key


async def run_idempotent(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    scope: str,
    key: str | None,
    request_hash: str,
    operation: Operation,
) -> Response:
    """Runs `operation` at most once per (scope, key), in one transaction with its response."""
    if key is None:
        async with unit_of_work(sessionmaker) as session:
            return await operation(session)
    claimed = await _claim(sessionmaker, scope, check_key(key), request_hash)
    if isinstance(claimed, Replay):
        return claimed.status, claimed.body
    try:
        async with unit_of_work(sessionmaker) as session:
            status, body = await operation(session)
            await _complete(session, claimed, status, body)
            return status, body
    except BaseException:
        await _release(sessionmaker, claimed)
        raise


async def run_idempotent_self_committing(
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    scope: str,
    key: str | None,
    request_hash: str,
    operation: SelfCommittingOperation,
) -> Response:
    """Runs `operation`, which commits on its own, at most once per (scope, key) while the
    key is claimed; its response is stored after it returns."""
    if key is None:
        return await operation()
    claimed = await _claim(sessionmaker, scope, check_key(key), request_hash)
    if isinstance(claimed, Replay):
        return claimed.status, claimed.body
    try:
        status, body = await operation()
        async with unit_of_work(sessionmaker) as session:
            await _complete(session, claimed, status, body)
        return status, body
    except BaseException:
        await _release(sessionmaker, claimed)
        raise


async def _complete(
    session: AsyncSession, claim_id: uuid.UUID, status: int, body: dict[str, Any]
) -> None:
    row = await session.get(IdempotencyKey, claim_id, with_for_update=True)
    if row is None:  # pragma: no cover - only an operator could delete it meanwhile
        raise Problem(409, "The Idempotency-Key was released while in use.")
    row.state = IdempotencyState.COMPLETED
    row.response_status = status
    row.response_body = body


async def _claim(
    sessionmaker: async_sessionmaker[AsyncSession], scope: str, key: str, request_hash: str
) -> Replay | uuid.UUID:
    for _ in range(3):
        # Its own commit, once per try: a lost race for a new key is tried again.
        async with sessionmaker() as session:
            now = utcnow()
            row = (
                await session.execute(
                    select(IdempotencyKey)
                    .where(IdempotencyKey.scope == scope, IdempotencyKey.key == key)
                    .with_for_update()
                )
            ).scalar_one_or_none()
            if row is not None and row.expires_at > now:
                if row.request_hash != request_hash:
                    raise validation_problem(
                        "This Idempotency-Key was used with a different request body.",
                        [field_error(["header", "Idempotency-Key"], "reused with another body")],
                    )
                if row.state is IdempotencyState.COMPLETED:
                    return Replay(row.response_status or 200, row.response_body or {})
                if row.locked_until > now:
                    raise Problem(
                        409,
                        "A request with this Idempotency-Key is still in progress.",
                        type_="idempotency-key-in-use",
                        headers={"Retry-After": "1"},
                    )
            if row is None:
                row = IdempotencyKey(scope=scope, key=key)
                session.add(row)
            # A new key, an expired one, or a claim abandoned by a crashed request.
            row.request_hash = request_hash
            row.state = IdempotencyState.IN_PROGRESS
            row.locked_until = now + CLAIM_LOCK
            row.expires_at = now + KEY_TTL
            row.response_status = None
            row.response_body = None
            try:
                await session.commit()
            except IntegrityError:
                # Another request inserted the same key between our read and our insert.
                await session.rollback()
                continue
            return row.id
    raise Problem(409, "A request with this Idempotency-Key is still in progress.")


async def _release(sessionmaker: async_sessionmaker[AsyncSession], claim_id: uuid.UUID) -> None:
    async with unit_of_work(sessionmaker) as session:
        await session.execute(
            delete(IdempotencyKey).where(
                IdempotencyKey.id == claim_id,
                IdempotencyKey.state == IdempotencyState.IN_PROGRESS,
            )
        )


async def purge_expired(session: AsyncSession) -> int:
    result = await session.execute(
        delete(IdempotencyKey).where(IdempotencyKey.expires_at <= utcnow())
    )
    return int(getattr(result, "rowcount", 0) or 0)

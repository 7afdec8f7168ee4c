"""Keyset pages, newest first and stable under inserts, for every list of the admin API.

A bad cursor is a domain error, so the repositories that page stay free of HTTP.
"""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, or_

from cryptocheckout.kit.errors import FieldIssue, Invalid


def encode_cursor(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = f"{created_at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, _, row_id = base64.urlsafe_b64decode(padded.encode()).decode().partition("|")
        moment = datetime.fromisoformat(created)
        if moment.tzinfo is None:
            raise ValueError("naive")
        return moment, uuid.UUID(row_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Invalid(
            "The cursor is not valid.",
            [FieldIssue(("query", "cursor"), "not a cursor this API gave")],
        ) from exc


def page(query: Select[Any], model: Any, limit: int, cursor: str | None) -> Select[Any]:
    if cursor:
        created_at, row_id = decode_cursor(cursor)
        query = query.where(
            or_(
                model.created_at < created_at,
                (model.created_at == created_at) & (model.id < row_id),
            )
        )
    return query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)


def split(rows: list[Any], limit: int) -> tuple[list[Any], str | None]:
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(last.created_at, last.id)

"""The rows the writers store, spelled once: both writers insert exactly these."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Table

from cryptocheckout.webhooks.ingest.body import Incoming, Rejected
from cryptocheckout.webhooks.models import RejectedWebhook, WebhookLog, WebhookLogStatus

PROVIDER = "nowpayments"
# The rejected-delivery log keeps at most this many rows; the oldest go first.
REJECTED_LOG_LIMIT = 2000

LOG_TABLE: Table = WebhookLog.__table__  # type: ignore[assignment]
REJECTED_TABLE: Table = RejectedWebhook.__table__  # type: ignore[assignment]


def log_row(item: Incoming, deliveries: int, raw_payload: object) -> dict[str, Any]:
    """The `webhook_logs` row of a notification delivered `deliveries` times in one batch.

    `raw_payload` is the display copy in the form the writer's driver takes (a dict for
    SQLAlchemy, JSON text for asyncpg). A row keeps the id it was inserted with, so the
    writers tell a new row from a redelivery by getting this id back.
    """
    return {
        "id": uuid.uuid4(),
        "provider": PROVIDER,
        "external_id": item.external_id,
        "provider_status": item.provider_status,
        "status": WebhookLogStatus.PENDING.value,
        "fingerprint": item.fingerprint,
        "raw_body": item.raw_body,
        "raw_payload": raw_payload,
        "deliveries": deliveries,
        "attempts": 0,
        "last_received_at": item.received_at,
        "created_at": item.received_at,
    }


def rejected_row(rejected: Rejected) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "provider": PROVIDER,
        "reason": rejected.reason[:200],
        # The address may come from a proxy header: cut it to the column.
        "remote_addr": (rejected.remote_addr or "")[:64] or None,
        "body_sha256": rejected.body_sha256,
        "body_size": rejected.body_size,
        "created_at": rejected.received_at,
    }


class PruneSchedule:
    """Prunes the rejected-delivery log after every tenth of its limit in new rows."""

    def __init__(self) -> None:
        self._since_prune = 0

    @property
    def limit(self) -> int:
        return REJECTED_LOG_LIMIT

    def due_after(self, added: int) -> bool:
        self._since_prune += added
        if self._since_prune < self.limit // 10:
            return False
        self._since_prune = 0
        return True

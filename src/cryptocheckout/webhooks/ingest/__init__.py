"""Durable storage of incoming notifications, with group commit.

NOWPayments must get a 200 only for a notification that is durably stored. One COMMIT per
request (one fsync each) caps the endpoint at the disk's flush rate, so concurrent
deliveries are queued to writer tasks that store everything that arrived meanwhile in one
INSERT and one COMMIT, then wake every waiting request. Each request still answers only
after its own row is committed: durability is unchanged, the flushes are shared.

An exact redelivery (same content fingerprint) is counted on its original row by
`ON CONFLICT (fingerprint) DO UPDATE`, never stored or applied twice.

The parts:

- `body`: what is kept of a verified body (`Incoming`), its content fingerprint, and the
  refused deliveries' log entries (`Rejected`);
- `rows`: the `webhook_logs` and `rejected_webhooks` rows, spelled once for every writer;
- `queue`: `NotificationStore`, the group-commit queue and its writer tasks;
- `postgres_writer`: PostgreSQL's writer, on its own asyncpg connection, one prepared
  `INSERT ... SELECT FROM unnest(...)` whose columns and types come from the table;
- `sqlalchemy_writer`: the portable writer (SQLite, the embedded default).
"""

from cryptocheckout.webhooks.ingest.body import (
    Incoming,
    Rejected,
    TooDeep,
    fingerprint,
    incoming,
)
from cryptocheckout.webhooks.ingest.queue import (
    BATCHES,
    STORE_TIMEOUT_SECONDS,
    NotificationStore,
    StoreUnavailable,
)

__all__ = [
    "BATCHES",
    "STORE_TIMEOUT_SECONDS",
    "Incoming",
    "NotificationStore",
    "Rejected",
    "StoreUnavailable",
    "TooDeep",
    "fingerprint",
    "incoming",
]

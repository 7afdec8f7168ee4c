"""An offline stand-in for NOWPayments: its API, hosted invoice page and signed IPNs.

Run the whole checkout with no account and no tunnel::

    app = create_sandbox_app(SandboxConfig.from_env(public_url="http://127.0.0.1:8100"))

``/v1/...`` answers like the real API (field names, type quirks, errors), payments walk
through the real status sequences and POST signed notifications to their
``ipn_callback_url``, and ``/sandbox/...`` lets tests and demos drive payments, disturb
notifications and inject faults.
"""

from cryptocheckout.sandbox.app import create_sandbox_app
from cryptocheckout.sandbox.config import SandboxConfig

__all__ = ["SandboxConfig", "create_sandbox_app"]

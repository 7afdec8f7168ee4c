"""The parts of one running sandbox, shared by its routers through ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from cryptocheckout.sandbox.auth import JwtIssuer
from cryptocheckout.sandbox.config import SandboxConfig
from cryptocheckout.sandbox.notifier import Notifier
from cryptocheckout.sandbox.simulation import Simulation
from cryptocheckout.sandbox.state import Invoice, Store


@dataclass
class SandboxRuntime:
    config: SandboxConfig
    store: Store
    notifier: Notifier
    simulation: Simulation
    jwt: JwtIssuer

    @classmethod
    def build(cls, config: SandboxConfig) -> SandboxRuntime:
        store = Store(config)
        notifier = Notifier(store, config.ipn_secret)
        return cls(
            config=config,
            store=store,
            notifier=notifier,
            simulation=Simulation(store, notifier),
            jwt=JwtIssuer(),
        )

    def invoice_url(self, invoice: Invoice) -> str:
        return f"{self.config.public_url}/payment/?iid={invoice.id}"

    def reset(self) -> None:
        self.simulation.cancel_all()
        self.store.reset()


def runtime(request: Request) -> SandboxRuntime:
    value = request.app.state.sandbox
    assert isinstance(value, SandboxRuntime)  # noqa: S101 - set once by create_sandbox_app
    return value

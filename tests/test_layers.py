"""The packages depend one way, checked on the source rather than remembered.

A module may import its own package and packages of lower layers, never a higher one nor a
sibling of its own layer. Services and repositories know nothing of HTTP: they raise the
domain errors of `kit/errors.py`, which the API maps to problem+json in one place.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "cryptocheckout"

# Lowest first. Each package (a folder, or a module at the top) belongs to exactly one layer.
LAYERS: list[set[str]] = [
    {"__init__"},  # the version
    {"config"},
    {"kit"},  # shared plumbing: imports no domain
    {"nowpayments"},  # the provider: client and IPN signatures
    {"catalogue"},
    {"orders"},
    {"payments"},
    {"webhooks", "fulfilment"},
    {"delivery"},
    {"customer"},  # the customer's view of an order, joining the packages below
    {"outbound"},  # webhooks to the shop's own systems
    {"admin", "pages", "health"},
    {"models"},  # every table, for Alembic
    {"migrations"},
    {"worker"},
    {"app"},
    {"demo"},
    {"cli"},
    {"__main__"},
]
# Packages that stand apart: the offline sandbox imports nothing of the shop it tests, only
# what is known of the provider (its signature and statuses).
STANDALONE = {"sandbox": {"__init__", "nowpayments"}}
# Modules that hold a domain's rules or SQL: no HTTP in them.
NO_HTTP = {"service.py", "repository.py", "queries.py", "state_machine.py", "notifications.py"}
HTTP_MODULES = ("fastapi", "starlette")


def _package(path: Path) -> str:
    return path.relative_to(SOURCE).parts[0].removesuffix(".py")


def _imported(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            if node.module == "cryptocheckout":  # `from cryptocheckout import admin`
                found.extend(
                    (node.lineno, f"cryptocheckout.{alias.name}")
                    for alias in node.names
                    if (SOURCE / alias.name).is_dir() or (SOURCE / f"{alias.name}.py").is_file()
                )
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def _target(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "cryptocheckout":
        return None
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def _layer_of() -> dict[str, int]:
    return {name: index for index, layer in enumerate(LAYERS) for name in layer}


def _sources() -> list[Path]:
    return sorted(SOURCE.rglob("*.py"))


def test_every_package_has_a_layer() -> None:
    layer = _layer_of()
    unplaced = {_package(path) for path in _sources()} - set(layer) - set(STANDALONE)
    assert not unplaced, f"place these packages in LAYERS (tests/test_layers.py): {unplaced}"


def test_packages_import_only_lower_layers() -> None:
    layer = _layer_of()
    wrong: list[str] = []
    for path in _sources():
        own = _package(path)
        for lineno, module in _imported(path):
            target = _target(module)
            if target is None or target == own:
                continue
            where = f"{path.relative_to(SOURCE)}:{lineno} imports {module}"
            if own in STANDALONE:
                if target not in STANDALONE[own]:
                    wrong.append(f"{where} (the {own} package stands apart)")
            elif target in STANDALONE:
                if own not in {"cli", "demo"}:
                    wrong.append(f"{where} (only the commands start the {target})")
            elif target not in layer or layer[target] >= layer[own]:
                wrong.append(f"{where} ({own} may not depend on {target})")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(set(wrong)))


def test_services_know_nothing_of_http() -> None:
    wrong = [
        f"{path.relative_to(SOURCE)}:{lineno} imports {module}"
        for path in _sources()
        if path.name in NO_HTTP
        for lineno, module in _imported(path)
        if module.split(".")[0] in HTTP_MODULES or module.startswith("cryptocheckout.kit.problems")
    ]
    assert not wrong, "services raise kit.errors, not HTTP:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "from cryptocheckout.webhooks.models import WebhookLog",
            "payments may not depend on webhooks",
        ),
        ("from cryptocheckout import admin", "payments may not depend on admin"),
        ("import cryptocheckout.customer.views", "payments may not depend on customer"),
    ],
)
def test_the_check_catches_an_upward_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, expected: str
) -> None:
    """The check itself fails on an import against the layers."""
    fake = tmp_path / "cryptocheckout"
    for package in ("payments", "admin", "customer"):
        (fake / package).mkdir(parents=True)
    (fake / "payments" / "bad.py").write_text(source + "\n")
    monkeypatch.setattr(f"{__name__}.SOURCE", fake)
    with pytest.raises(AssertionError, match=expected):
        test_packages_import_only_lower_layers()

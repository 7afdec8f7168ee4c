"""The offline sandbox stands for NOWPayments, so it imports nothing of the shop.

Its only way into the rest of the package is the IPN signature module (JavaScript's
number printing and the HMAC), which has been independently checked against node. A
sandbox that reused the shop's settings, models or client would agree with the shop's
mistakes instead of exposing them.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import cryptocheckout.sandbox

SANDBOX_DIR = Path(cryptocheckout.sandbox.__file__).parent
ALLOWED = ("cryptocheckout.sandbox", "cryptocheckout.nowpayments.signature")
# Packages Python imports on the way to an allowed module; they run only their __init__.
PARENTS = {"cryptocheckout", "cryptocheckout.nowpayments"}


def _allowed(name: str) -> bool:
    return any(name == allowed or name.startswith(f"{allowed}.") for allowed in ALLOWED)


def _package_of(path: Path) -> list[str]:
    return ["cryptocheckout", "sandbox", *path.relative_to(SANDBOX_DIR).parent.parts]


def _imported_names(source: str, package: list[str]) -> list[tuple[int, str]]:
    """Every module the source imports, relative imports resolved against its package."""
    names: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            # `from cryptocheckout import config` imports cryptocheckout.config.
            names.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
            names.append((node.lineno, module))
    return names


def test_no_sandbox_module_imports_a_shop_module() -> None:
    files = sorted(SANDBOX_DIR.rglob("*.py"))
    assert len(files) > 10  # the walk found the package
    offending = [
        f"{path.relative_to(SANDBOX_DIR)}:{line} imports {name}"
        for path in files
        for line, name in _imported_names(path.read_text(), _package_of(path))
        if name.split(".")[0] == "cryptocheckout" and name not in PARENTS and not _allowed(name)
    ]
    assert offending == []


def test_the_rule_sees_absolute_relative_and_from_imports() -> None:
    # The check above would pass vacuously if the walk missed imports: prove it sees them.
    source = "import cryptocheckout.orders\nfrom cryptocheckout import config\n" + (
        "from .. import state\nfrom ...kit import db\n"
    )
    names = {name for _, name in _imported_names(source, ["cryptocheckout", "sandbox", "sub"])}
    assert {
        "cryptocheckout.orders",
        "cryptocheckout.config",
        "cryptocheckout.sandbox.state",
        "cryptocheckout.kit.db",
    } <= names
    assert not any(
        _allowed(n) for n in names - {"cryptocheckout.sandbox.state", "cryptocheckout.sandbox"}
    )


def test_importing_every_sandbox_module_loads_nothing_of_the_shop() -> None:
    # A fresh interpreter, so modules the test session already loaded do not hide anything.
    modules = sorted(
        "cryptocheckout.sandbox." + ".".join(p.relative_to(SANDBOX_DIR).with_suffix("").parts)
        for p in SANDBOX_DIR.rglob("*.py")
        if p.name != "__init__.py"
    )
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print('\\n'.join(m for m in sys.modules if m.split('.')[0] == 'cryptocheckout'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(result.stdout.split())
    assert set(modules) <= loaded
    assert {m for m in loaded if m not in PARENTS and not _allowed(m)} == set()

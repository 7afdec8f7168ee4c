"""The example deployment files under deploy/: systemd units, Procfile, pgbouncer.ini."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cryptocheckout.cli import build_parser, main

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
UNITS = sorted(DEPLOY.glob("*.service"))
INSTALLED = "/opt/cryptocheckout/.venv/bin/cryptocheckout"


def _unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def test_the_units_and_procfile_are_there() -> None:
    names = {p.name for p in UNITS}
    assert {
        "cryptocheckout-api.service",
        "cryptocheckout-worker@.service",
        "cryptocheckout-migrate.service",
    } <= names
    assert (DEPLOY / "Procfile").is_file()


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_runs_a_command_the_cli_accepts(unit: Path) -> None:
    parsed = _unit(unit)
    assert {"Unit", "Service"} <= set(parsed.sections())
    command = shlex.split(parsed["Service"]["ExecStart"])
    assert command[0] == INSTALLED
    args = build_parser().parse_args(command[1:])
    assert args.command in {"serve", "worker", "migrate"}
    if args.command == "serve":
        assert args.workers >= 2 and args.no_worker  # workers run as their own units


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the units were parsed as INI above")
    here = str(Path(sys.executable).parent / "cryptocheckout")
    for unit in UNITS:
        name = unit.name.replace("@.service", "@1.service")
        (tmp_path / name).write_text(unit.read_text().replace(INSTALLED, here))
    result = subprocess.run(
        [analyze, "verify", "--man=no", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Unknown" not in output and "ignoring" not in output, output


def test_procfile_lines_are_shell_commands_the_cli_accepts() -> None:
    lines = [line for line in (DEPLOY / "Procfile").read_text().splitlines() if line.strip()]
    kinds = {}
    for line in lines:
        kind, command = line.split(":", 1)
        # The shell expands the line as a Procfile runner would; `cryptocheckout` prints its
        # arguments instead of running.
        script = 'cryptocheckout() { printf "%s\\n" "$@"; }; ' + command
        result = subprocess.run(
            ["sh", "-c", script], capture_output=True, text=True, timeout=10, env={}
        )
        assert result.returncode == 0, result.stderr
        kinds[kind] = build_parser().parse_args(result.stdout.splitlines()).command
    assert kinds == {"release": "migrate", "web": "serve", "worker": "worker"}


def test_example_pgbouncer_config_is_transaction_mode() -> None:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";",))
    parser.read(DEPLOY / "pgbouncer.ini")
    assert parser["pgbouncer"]["pool_mode"] == "transaction"
    assert int(parser["pgbouncer"]["max_client_conn"]) >= 8 * 32
    assert parser["pgbouncer"]["ignore_startup_parameters"] == ""


def test_migrate_refuses_a_pooled_connection(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptocheckout.config import settings_from_environment

    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:1/none")
    monkeypatch.setenv("DATABASE_POOLED", "true")
    settings_from_environment.cache_clear()
    try:
        assert main(["migrate"]) == 2
    finally:
        settings_from_environment.cache_clear()
    assert "direct" in capsys.readouterr().err

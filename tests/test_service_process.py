"""The command line and the service over a real socket."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cryptocheckout.app import create_app
from cryptocheckout.config import Mode, Settings
from tests.support.servers import free_port, serve_in_thread

CLI = [sys.executable, "-m", "cryptocheckout"]


def _env(**values: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NOWPAYMENTS_", "ADMIN_", "CRYPTOCHECKOUT_", "DATABASE_"))
    }
    env.update(values)
    return env


def test_migrate_creates_the_default_sqlite_database(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "migrate"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "var" / "cryptocheckout.db").exists()
    again = subprocess.run(
        [*CLI, "migrate"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({}, "NOWPAYMENTS_API_KEY"),
        ({"NOWPAYMENTS_API_KEY": "k", "NOWPAYMENTS_IPN_SECRET": "s"}, "ADMIN_TOKEN"),
        (
            {"NOWPAYMENTS_API_KEY": "k", "NOWPAYMENTS_IPN_SECRET": "s", "ADMIN_TOKEN": "abc"},
            "ADMIN_TOKEN",
        ),
        (
            {"NOWPAYMENTS_API_KEY": "k", "NOWPAYMENTS_IPN_SECRET": "changeme", "ADMIN_TOKEN": "a"},
            "NOWPAYMENTS_IPN_SECRET",
        ),
    ],
)
def test_serve_refuses_missing_secrets_naming_them(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    result = subprocess.run(
        [*CLI, "serve", "--port", str(free_port())],
        cwd=tmp_path,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert named in result.stderr
    for secret in env.values():
        if len(secret) > 1:
            assert f"={secret}" not in result.stderr


def test_readyz_is_503_when_the_database_does_not_answer() -> None:
    dead = Settings(
        _env_file=None,  # type: ignore[call-arg]
        mode=Mode.TEST,
        database_url=f"postgresql://postgres@127.0.0.1:{free_port()}/nothing",
        admin_token="a",
    )
    with serve_in_thread(create_app(dead)) as base:
        assert httpx.get(f"{base}/healthz").status_code == 200
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.headers["content-type"] == "application/problem+json"


def test_real_socket_413_and_openapi(settings: Settings) -> None:
    with serve_in_thread(create_app(settings)) as base:
        assert httpx.get(f"{base}/readyz").status_code == 200
        big = httpx.post(
            f"{base}/api/orders",
            content=b"x" * (65 * 1024),
            headers={"Content-Type": "application/json"},
        )
        assert big.status_code == 413
        spec = httpx.get(f"{base}/openapi.json").json()
        for path in [
            "/api/products",
            "/api/orders",
            "/api/orders/{order_id}",
            "/api/admin/products",
            "/healthz",
            "/readyz",
        ]:
            assert path in spec["paths"], path


async def test_access_log_leaves_out_query_strings(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    with caplog.at_level(logging.INFO, logger="cryptocheckout.access"):
        await client.get("/api/orders/00000000-0000-4000-8000-000000000000?token=s3cret-token")
    lines = [r.getMessage() for r in caplog.records if r.name == "cryptocheckout.access"]
    assert lines == [lines[0]] and lines[0].startswith("GET /api/orders/")
    assert " 404 " in lines[0]
    assert "s3cret-token" not in caplog.text


def test_engines_keep_parameters_out_of_errors(tmp_path: Path) -> None:
    from cryptocheckout.kit.db import create_engine

    engine = create_engine(f"sqlite:///{tmp_path}/x.db")
    assert engine.sync_engine.hide_parameters is True

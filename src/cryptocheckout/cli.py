"""The `cryptocheckout` command: migrate, serve, worker, sandbox, demo."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from cryptocheckout.config import ConfigurationError, settings_from_environment


def _configure_logging() -> None:
    from cryptocheckout.kit.logsafe import SafeFormatter

    handler = logging.StreamHandler()
    # Every record one line: values from outside (paths, provider answers) are escaped.
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def cmd_migrate(_args: argparse.Namespace) -> None:
    from cryptocheckout.kit.migrate import upgrade

    settings = settings_from_environment()
    if settings.database_pooled:
        # DDL and Alembic's session through a transaction pooler: not what a deploy should
        # depend on (see the README's deployment section).
        raise ConfigurationError(
            "migrate needs a direct connection to PostgreSQL: run it with DATABASE_URL set to "
            "the server itself (not PgBouncer) and DATABASE_POOLED=false"
        )
    upgrade(
        settings.database_url,
        keys_encryption_key=settings.keys_encryption_key.get_secret_value() or None,
    )
    print("database is at the latest migration")


def cmd_rotate_keys(args: argparse.Namespace) -> None:
    import asyncio

    from cryptocheckout.catalogue.rotation import rotate_keys
    from cryptocheckout.kit.encryption import keyring_of

    settings = settings_from_environment()
    ring = keyring_of(settings)
    total = asyncio.run(
        rotate_keys(settings.database_url, ring, batch=args.batch, pooled=settings.database_pooled)
    )
    print(f"{total} licence keys re-encrypted; every key is now under key {ring.current.key_id}")


# `serve --workers N` starts N uvicorn worker processes; each builds its app with `serve_app`,
# which learns from this variable whether to run a job worker beside the API.
_SERVE_JOB_WORKER = "CRYPTOCHECKOUT_SERVE_JOB_WORKER"


def serve_app() -> object:
    """The app of one `serve --workers N` process (uvicorn's factory, run in each process):
    its own engine, its own IPN group commit and, unless `--no-worker`, its own job worker."""
    from cryptocheckout.app import create_app
    from cryptocheckout.kit.serving import HeaderDeadlineProtocol

    _configure_logging()  # a spawned process starts without the parent's logging set-up
    settings = settings_from_environment()
    HeaderDeadlineProtocol.header_timeout = settings.request_header_timeout_seconds
    return create_app(settings, run_worker=os.environ.get(_SERVE_JOB_WORKER) == "1")


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from cryptocheckout.app import create_app
    from cryptocheckout.kit.serving import server_config

    settings = settings_from_environment()
    required = [
        "nowpayments_api_key",
        "nowpayments_ipn_secret",
        "admin_token",
        "keys_encryption_key",
    ]
    if settings.metrics_token.get_secret_value():
        required.append("metrics_token")
    settings.require(*required)
    if args.workers > 1:
        # uvicorn's supervisor: N processes on one socket, each restarted if it dies. The
        # processes are spawned, so the app and protocol are named, not passed.
        os.environ[_SERVE_JOB_WORKER] = "0" if args.no_worker else "1"
        config = server_config(
            "cryptocheckout.cli:serve_app",
            host=args.host,
            port=args.port,
            factory=True,
            workers=args.workers,
            http="cryptocheckout.kit.serving:HeaderDeadlineProtocol",
        )
        from uvicorn.supervisors.multiprocess import Multiprocess

        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    app = create_app(settings, run_worker=not args.no_worker)
    config = server_config(
        app,
        host=args.host,
        port=args.port,
        header_timeout=settings.request_header_timeout_seconds,
    )
    uvicorn.Server(config).run()


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def cmd_worker(_args: argparse.Namespace) -> None:
    import asyncio

    from cryptocheckout.worker import run_standalone

    settings = settings_from_environment()
    settings.require("nowpayments_api_key", "nowpayments_ipn_secret", "keys_encryption_key")
    asyncio.run(run_standalone(settings))


def cmd_demo(args: argparse.Namespace) -> None:
    import asyncio

    from cryptocheckout.demo import run_demo

    asyncio.run(run_demo(host=args.host, port=args.port, sandbox_port=args.sandbox_port))


def cmd_sandbox(args: argparse.Namespace) -> None:
    """The sandbox stands for NOWPayments: it reads its own variables, not the shop's settings."""
    import uvicorn

    from cryptocheckout.sandbox import SandboxConfig, create_sandbox_app

    config = SandboxConfig.from_env(public_url=f"http://{args.host}:{args.port}")
    uvicorn.run(create_sandbox_app(config), host=args.host, port=args.port, log_level="info")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cryptocheckout", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    migrate = commands.add_parser("migrate", help="apply all migrations to DATABASE_URL")
    migrate.set_defaults(handler=cmd_migrate)

    rotate = commands.add_parser(
        "rotate-keys",
        help="re-encrypt every stored licence key under the first KEYS_ENCRYPTION_KEY "
        "(resumable; safe while the shop serves)",
    )
    rotate.add_argument("--batch", type=int, default=200, help="keys per transaction")
    rotate.set_defaults(handler=cmd_rotate_keys)

    serve = commands.add_parser("serve", help="serve the API and pages")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--no-worker", action="store_true", help="do not run a job worker here")
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="API processes on the one port, each with its own IPN group commit and job worker",
    )
    serve.set_defaults(handler=cmd_serve)

    worker = commands.add_parser("worker", help="run a job worker (any number may run)")
    worker.set_defaults(handler=cmd_worker)

    demo = commands.add_parser(
        "demo", help="sandbox + shop + worker on SQLite with demo products, no set-up"
    )
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.add_argument("--sandbox-port", type=int, default=8100)
    demo.set_defaults(handler=cmd_demo)

    sandbox = commands.add_parser("sandbox", help="run the offline NOWPayments sandbox")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8100)
    sandbox.set_defaults(handler=cmd_sandbox)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from cryptocheckout.sandbox.config import SandboxConfigError

    args = build_parser().parse_args(argv)
    _configure_logging()
    try:
        args.handler(args)
    except (ConfigurationError, SandboxConfigError) as exc:
        print(f"cryptocheckout: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

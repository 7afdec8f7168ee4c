"""A PgBouncer of the tests' own in transaction mode, on a free loopback port.

It forwards every database name to the PostgreSQL server of TEST_DATABASE_URL, as an
operator's PgBouncer in front of the service's database would (`pool_mode = transaction`,
trust authentication for the one local user). PgBouncer refuses to run as root, so under root
it runs as the `postgres` user.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from sqlalchemy.engine import make_url

from tests.support.servers import free_port

RUN_AS = "postgres"


class PgBouncerUnavailable(RuntimeError):
    """PgBouncer is not installed or did not start."""


def find_pgbouncer() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None
    )


def config_text(
    *, listen_port: int, pg_host: str, pg_port: int, workdir: Path, admin: str = RUN_AS
) -> str:
    return f"""\
[databases]
* = host={pg_host} port={pg_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen_port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir}/userlist.txt
pool_mode = transaction
max_client_conn = 400
default_pool_size = 20
reserve_pool_size = 5
server_reset_query =
admin_users = {admin}
logfile = {workdir}/pgbouncer.log
pidfile = {workdir}/pgbouncer.pid
"""


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def run_pgbouncer(server_url: str) -> Iterator[int]:
    """Start PgBouncer in front of `server_url`'s PostgreSQL; yield its port; stop it."""
    binary = find_pgbouncer()
    if binary is None:
        raise PgBouncerUnavailable("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    server = make_url(server_url)
    user = server.username or RUN_AS
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    (workdir / "userlist.txt").write_text(f'"{user}" ""\n')
    ini = workdir / "pgbouncer.ini"
    ini.write_text(
        config_text(
            listen_port=port,
            pg_host=server.host or "127.0.0.1",
            pg_port=server.port or 5432,
            workdir=workdir,
            admin=user,
        )
    )
    command = [binary, str(ini)]
    if os.geteuid() == 0:  # "PgBouncer should not run as root"
        shutil.chown(workdir, RUN_AS)
        for path in workdir.iterdir():
            shutil.chown(path, RUN_AS)
        command = ["runuser", "-u", RUN_AS, "--", *command]
    # In the foreground PgBouncer logs to stderr as well as to its logfile: into a file, never
    # into a pipe nobody reads (a full pipe blocks PgBouncer, and every client with it).
    with (workdir / "stderr.log").open("wb") as stderr_file:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr_file)
    try:
        deadline = time.monotonic() + 10
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                log = workdir / "pgbouncer.log"
                detail = log.read_text()[-2000:] if log.exists() else ""
                stderr = (workdir / "stderr.log").read_text(errors="replace")[-2000:]
                raise PgBouncerUnavailable(f"pgbouncer did not start: {stderr}{detail}")
            time.sleep(0.05)
        yield port
    finally:
        pidfile = workdir / "pgbouncer.pid"
        if pidfile.exists():  # pgbouncer itself, not runuser
            with suppress(ValueError, ProcessLookupError):
                os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)


def pooled_url(database_url: str, port: int) -> str:
    """`database_url` with PgBouncer's address instead of the server's."""
    return (
        make_url(database_url)
        .set(host="127.0.0.1", port=port)
        .render_as_string(hide_password=False)
    )

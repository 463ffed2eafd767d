"""A throwaway PostgreSQL server for the test session, from the machine's Debian packages."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found. Install them with "
    "`apt-get install -y postgresql` (`make test` and .ci/run do this), or point "
    "ISSUE_LABELER_TEST_POSTGRES_URL at a server, or set ISSUE_LABELER_SKIP_POSTGRES=1 "
    "to skip the PostgreSQL tests on purpose."
)


def _bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """initdb + pg_ctl in a temporary folder; as root, the server runs as the ``postgres`` user.

    The tests' server does not flush to disk (``durable=False``); a benchmark of the store as
    production runs it asks for ``durable=True``: every commit waits for its WAL flush."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        bindir = _bindir()
        if bindir is None:
            raise RuntimeError(INSTALL_HINT)
        self.bindir = bindir
        self.port = _free_port()
        self.root = Path(tempfile.mkdtemp(prefix="issue-labeler-pg-"))
        self.datadir = self.root / "data"
        self._prefix: list[str] = []
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root but there is no 'postgres' user; " + INSTALL_HINT
                ) from None
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._prefix = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self._prefix, *args], check=True, capture_output=True, text=True)

    def start(self) -> str:
        try:
            self._run(
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-A",
                "trust",
                "-U",
                "test",
                "-E",
                "UTF8",
            )
            self._run(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-w",
                "-l",
                str(self.root / "log"),
                "-o",
                f"-p {self.port} -h 127.0.0.1 -k {self.root}"
                + ("" if self.durable else " -c fsync=off -c full_page_writes=off"),
                "start",
            )
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"could not start PostgreSQL: {exc.stderr or exc.stdout}") from None
        return f"postgresql+psycopg://test@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        subprocess.run(
            [*self._prefix, str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(self.root, ignore_errors=True)

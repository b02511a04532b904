"""A throwaway PostgreSQL cluster: initdb + pg_ctl in a temporary folder, on 127.0.0.1 and a free port.

Used by the test fixtures and by ``make bench``. initdb and postgres refuse to run as root, so under
root (as in CI) both run as the ``postgres`` user on a folder it owns.

    python tests/pgcluster.py -- COMMAND [ARGS...]

starts a cluster, runs COMMAND with ESCROW_TEST_POSTGRES_URL set to its URL, and tears it down.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

ENV_URL = "ESCROW_TEST_POSTGRES_URL"
SUPERUSER = "escrow"

# Tests need no durability; the bench asks for it to measure what production would see.
FAST_SETTINGS = ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
# The bench's durable cluster is sized like a modest production server rather than PostgreSQL's
# defaults (128 MB of buffers, a checkpoint every 1 GB of WAL): fsync stays on.
DURABLE_SETTINGS = ["shared_buffers=1GB", "effective_cache_size=8GB", "max_wal_size=4GB"]


def find_binary(name: str) -> str | None:
    """``name`` from PATH, else from the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return candidates[-1] if candidates else None


def available() -> bool:
    """True when initdb, pg_ctl and postgres can be found (and, as root, the postgres user exists)."""
    if not all(find_binary(b) for b in ("initdb", "pg_ctl", "postgres")):
        return False
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TempCluster:
    """A PostgreSQL server that exists only between ``start()`` and ``stop()``."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.folder: Path | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        assert self.port is not None, "cluster not started"
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def start(self) -> str:
        initdb = find_binary("initdb")
        pg_ctl = find_binary("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise RuntimeError("PostgreSQL is not installed (initdb/pg_ctl not found)")
        self.folder = Path(tempfile.mkdtemp(prefix="escrow-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        data = self.folder / "data"
        subprocess.run(
            self._as_owner(
                [
                    initdb,
                    "-D",
                    str(data),
                    "-U",
                    SUPERUSER,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
        )
        settings = DURABLE_SETTINGS if self.durable else FAST_SETTINGS
        last_error = ""
        for _attempt in range(5):
            port = _free_port()
            options = " ".join(
                [f"-c listen_addresses=127.0.0.1 -p {port} -k {self.folder}"]
                + [f"-c {s}" for s in settings]
                + ["-c max_connections=200"]
            )
            result = subprocess.run(
                self._as_owner(
                    [
                        pg_ctl,
                        "-D",
                        str(data),
                        "-l",
                        str(self.folder / "server.log"),
                        "-w",
                        "-t",
                        "60",
                        "-o",
                        options,
                        "start",
                    ]
                ),
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode == 0:
                self.port = port
                return self.url
            last_error = result.stderr + result.stdout
            time.sleep(0.2)
        log = (self.folder / "server.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"PostgreSQL did not start: {last_error}\n{log}")

    def stop(self) -> None:
        if self.folder is None:
            return
        pg_ctl = find_binary("pg_ctl")
        data = self.folder / "data"
        if self.port is not None and pg_ctl is not None and data.exists():
            subprocess.run(
                self._as_owner([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]),
                capture_output=True,
                check=False,
            )
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None
        self.port = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "--" or len(argv) < 2:
        sys.stderr.write("usage: python tests/pgcluster.py -- COMMAND [ARGS...]\n")
        return 2
    durable = os.environ.get("ESCROW_PG_DURABLE") == "1"
    with TempCluster(durable=durable) as cluster:
        env = dict(os.environ, **{ENV_URL: cluster.url})
        return subprocess.run(argv[1:], env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

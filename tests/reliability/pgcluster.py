"""A throwaway PostgreSQL cluster on a free loopback port, in a temporary folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.daemon_helpers import free_port


class Cluster:
    def __init__(self, root: Path) -> None:
        self.data = root / "pgdata"
        self.port = free_port()
        # initdb refuses to run as root: the cluster belongs to the postgres user then.
        self._user = "postgres" if os.geteuid() == 0 else None
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(list(args), check=True, capture_output=True, user=self._user, timeout=60)

    def init(self) -> None:
        self.data.parent.mkdir(parents=True, exist_ok=True)
        if self._user:
            shutil.chown(self.data.parent, self._user)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync")

    def pg_ctl(self, action: str, *extra: str) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off"
        self._run("pg_ctl", action, "-D", str(self.data), "-w", "-t", "30", "-o", options, *extra)

    def pids(self) -> list[int]:
        """The postmaster and its children (for SIGSTOP/SIGCONT)."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(
            ["pgrep", "-P", str(postmaster)], capture_output=True, text=True, check=False
        ).stdout.split()
        return [postmaster, *map(int, children)]


@contextlib.contextmanager
def throwaway_cluster() -> Iterator[Cluster]:
    # Its own folder, readable by the postgres user (pytest's tmp_path is private to root).
    root = Path(tempfile.mkdtemp(prefix="exposure-monitor-pg-"))
    root.chmod(0o755)
    cluster = Cluster(root / "cluster")
    try:
        cluster.init()
        cluster.pg_ctl("start", "-l", str(cluster.data.parent / "postgres.log"))
        try:
            yield cluster
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                cluster.pg_ctl("stop", "-m", "immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)

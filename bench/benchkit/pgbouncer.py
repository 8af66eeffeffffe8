"""A PgBouncer in transaction mode in front of a drill's PostgreSQL database (``--pgbouncer``).

The same settings as ``.ci/run`` and ``deploy/``: ``pool_mode = transaction``, trust auth on
127.0.0.1, a free port, at most 20 server connections. It runs in the foreground as a child of
the drill (as the ``postgres`` user when the drill runs as root: PgBouncer refuses root), so
the drill stops it with everything else. Debian's package: ``apt-get install pgbouncer``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from benchkit.common import Children, free_port


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(found).exists():
        raise SystemExit("pgbouncer is not installed: apt-get install pgbouncer")
    return found


class PgBouncer:
    """Start with ``start(kids)``; ``url`` is then ``direct_url`` with the pooler's port."""

    def __init__(self, direct_url: str, pool_size: int = 20) -> None:
        self.direct_url = direct_url
        self.pool_size = pool_size
        self.port = free_port()
        parts = urlsplit(direct_url)
        self.user = parts.username or "postgres"
        self.server = (parts.hostname or "127.0.0.1", parts.port or 5432)
        netloc = f"{self.user}@127.0.0.1:{self.port}"
        self.url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        self.dir = Path(tempfile.mkdtemp(prefix="careflow-pgbouncer-"))

    def config(self) -> str:
        host, port = self.server
        return f"""[databases]
* = host={host} port={port}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.dir}/userlist.txt
pool_mode = transaction
max_client_conn = 1000
default_pool_size = {self.pool_size}
max_db_connections = {self.pool_size}
ignore_startup_parameters = extra_float_digits
idle_transaction_timeout = 120
server_login_retry = 1
"""

    def start(self, kids: Children) -> None:
        (self.dir / "userlist.txt").write_text(f'"{self.user}" ""\n')
        ini = self.dir / "pgbouncer.ini"
        ini.write_text(self.config())
        cmd = [pgbouncer_binary(), str(ini)]
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            for path in (self.dir, *self.dir.iterdir()):
                os.chown(path, account.pw_uid, account.pw_gid)
            # setpriv execs PgBouncer itself, so the drill's SIGTERM reaches it.
            cmd = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *cmd]
        kids.start("pgbouncer", cmd, dict(os.environ))
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            kids.check_alive()
            if _accepts(self.port):
                return
            time.sleep(0.1)
        raise TimeoutError(f"pgbouncer did not listen on {self.port}")


def _accepts(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0

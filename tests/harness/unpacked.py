"""Mail servers run from their unpacked Debian packages (``scripts/mail_servers.py``).

The programs expect their files at their absolute paths (``/usr/lib/cyrus/bin/imapd``), so
each command runs in a private mount namespace (``unshare -m``) where every top-level folder
of the unpacked root is overlaid on the host's (``lowerdir=<root>/usr:/usr`` mounted on
``/usr``, and so on), read-only; folders a server insists on writing at fixed paths
(``/etc/courier``, ``/run/courier``) are the test's own temp folders bound there. The host
and the other tests see nothing of it; the processes stay the test's own. One overlay of the
root on ``/`` with a chroot is not possible: the kernel refuses a lower layer that lies
inside another (ELOOP), and the root lies inside ``/``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import ssl
import subprocess
import tempfile
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Self

from imapclient import IMAPClient
from scripts.mail_servers import how_to_get, is_ready, root_of

from mailintake_devstack.broker import free_port, stop_process, wait_for_port
from tests.harness.mailserver import Ports, append
from tests.harness.tls import TestPki, make_pki

NO_FSYNC = "libeatmydata.so"  # scripts/mail_servers.py unpacks it beside each server


class UnpackedMailServer:
    """What the unpacked servers share: a temp dir, the tests' CA, four free ports, daemons
    started in the private namespace (:meth:`spawn`) and stopped by PID, and mail put in by
    APPEND as the user over IMAPS.

    Raises RuntimeError (naming what to install) when the packages are not unpacked, or the
    tests do not run as root.
    """

    name: str
    writable: tuple[str, ...] = ()  # absolute paths, each bound to <temp dir>/rw/<path>

    def __init__(self, *, pki: TestPki | None) -> None:
        if not is_ready(self.name):
            raise RuntimeError(how_to_get(self.name))
        if os.geteuid() != 0:
            raise RuntimeError(f"{self.name} runs in a private mount namespace: run as root")
        self.unpacked_root = root_of(self.name)
        # Unix sockets may live under it (108-byte path limit): keep it short.
        self.root = Path(tempfile.mkdtemp(prefix=f"mi{self.name[:2]}", dir="/tmp"))
        self.root.chmod(0o755)  # daemons running as nobody reach their folders in it
        self.pki = pki or make_pki(self.root / "pki")
        self.ports = Ports(free_port(), free_port(), free_port(), free_port())
        self.passwords: dict[str, str] = {}
        self._processes: list[subprocess.Popen[bytes]] = []
        for path in self.writable:
            self.rw(path).mkdir(parents=True)

    def rw(self, path: str) -> Path:
        """The temp folder shown at ``path`` (one of :attr:`writable`) to the server."""
        return self.root / "rw" / path.lstrip("/")

    def command(self, *argv: str) -> list[str]:
        """``argv`` run with the unpacked packages at their paths."""
        layers = [self.unpacked_root, self.root / "rw"]
        mounts = []
        for top in sorted({p.name for layer in layers if layer.is_dir() for p in layer.iterdir()}):
            lower = [str(layer / top) for layer in reversed(layers) if (layer / top).is_dir()]
            options = "lowerdir=" + ":".join([*lower, f"/{top}"])
            mounts.append(f"mount -t overlay overlay -o {shlex.quote(options)} /{top}")
        mounts += [f"mount --bind {shlex.quote(str(self.rw(p)))} {p}" for p in self.writable]
        script = " && ".join([*mounts, 'exec "$@"'])
        return ["unshare", "--mount", "--", "sh", "-c", script, "sh", *argv]

    def start(self) -> Self:
        """Start the daemons; return when every listener accepts connections."""
        raise NotImplementedError

    def spawn(self, *argv: str, env: dict[str, str] | None = None) -> None:
        """Start a daemon that stays in the foreground, its fsync() a no-op; its output goes
        to the log."""
        log = (self.root / "server.log").open("ab")
        env = {**(os.environ if env is None else env), "LD_PRELOAD": NO_FSYNC}
        self._processes.append(
            subprocess.Popen(self.command(*argv), env=env, stdout=log, stderr=subprocess.STDOUT)
        )

    def wait_listening(self) -> None:
        for port in (self.ports.imap, self.ports.imaps, self.ports.pop3, self.ports.pop3s):
            wait_for_port("127.0.0.1", port, timeout_s=20)

    def stop(self) -> None:
        while self._processes:
            stop_process(self._processes.pop())

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def seed(
        self,
        email: str,
        messages: Iterable[bytes],
        *,
        folder: str = "INBOX",
        seen: bool = False,
        received: datetime | None = None,
    ) -> int:
        """APPEND ``messages`` as the user; how many."""
        context = ssl.create_default_context(cafile=str(self.pki.ca_pem))
        with IMAPClient("127.0.0.1", self.ports.imaps, ssl=True, ssl_context=context) as client:
            client.login(email, self.passwords[email])
            return append(client, folder, messages, seen=seen, received=received)


def crypt_sha512(password: str) -> str:
    """``password`` as crypt(3) stores it (``$6$<salt>$<hash>``), for the servers' user files."""
    return subprocess.run(
        ["openssl", "passwd", "-6", "-stdin"],
        input=password,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

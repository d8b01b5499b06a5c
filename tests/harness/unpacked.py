"""Run a server's programs from its unpacked Debian packages (``scripts/mail_servers.py``).

The programs expect their files at their absolute paths (``/usr/lib/cyrus/bin/imapd``), so
each command runs in a private mount namespace (``unshare -m``) where every top-level folder
of the unpacked root is overlaid on the host's (``lowerdir=<root>/usr:/usr`` mounted on
``/usr``, and so on). The host and the other tests see nothing of it; the processes stay the
test's own. One overlay of the root on ``/`` with a chroot is not possible: the kernel
refuses a lower layer that lies inside another (ELOOP), and the root lies inside ``/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from scripts.mail_servers import how_to_get, is_ready, root_of

_OVERLAY = (
    'root=$1; shift; for dir in "$root"/*; do top=/${dir##*/}; '
    'mount -t overlay overlay -o "lowerdir=$dir:$top" "$top" || exit 1; done; exec "$@"'
)


class UnpackedServer:
    """The unpacked root of one server; :meth:`command` wraps an argv to run inside it.

    Raises RuntimeError (naming what to install) when the root is missing or not root.
    """

    def __init__(self, name: str) -> None:
        if not is_ready(name):
            raise RuntimeError(how_to_get(name))
        if os.geteuid() != 0:
            raise RuntimeError(f"{name} runs in a private mount namespace: run the tests as root")
        self.name = name
        self.root: Path = root_of(name)

    def command(self, *argv: str) -> list[str]:
        return ["unshare", "--mount", "--", "sh", "-c", _OVERLAY, "sh", str(self.root), *argv]

    def package_version(self, package: str) -> str:
        """The Debian version of one of the unpacked packages (from its .deb's file name)."""
        debs = self.root.parent / "debs"
        return next(debs.glob(f"{package}_*.deb")).name.split("_")[1].replace("%3a", ":")

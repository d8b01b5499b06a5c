"""Mail servers for the tests that conflict with Dovecot in apt, unpacked instead of installed.

python scripts/mail_servers.py cyrus [courier mailutils]

Each server's Debian packages, and every library package among their dependencies that this
machine lacks, are fetched with ``apt-get download`` into ``.tools/mail-servers/<name>/debs``
and unpacked with ``dpkg -x`` into ``.tools/mail-servers/<name>/root``: nothing is installed,
no service starts. The tests run the daemons from that root (``tests/harness/unpacked.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

TOOLS = Path(__file__).resolve().parents[1] / ".tools" / "mail-servers"
# Preloaded into every server (LD_PRELOAD=libeatmydata.so): fsync() does nothing, which is
# right for the tests' throwaway spools and makes APPEND several times faster.
NO_FSYNC = "libeatmydata1"


@dataclass(frozen=True)
class Server:
    packages: tuple[str, ...]
    binaries: tuple[str, ...]  # paths inside the root that must find every shared library


SERVERS = {
    "cyrus": Server(
        ("cyrus-common", "cyrus-imapd", "cyrus-pop3d", "cyrus-admin", "sasl2-bin", NO_FSYNC),
        (
            "usr/sbin/cyrmaster",
            "usr/sbin/saslpasswd2",
            "usr/lib/cyrus/bin/imapd",
            "usr/lib/cyrus/bin/pop3d",
            "usr/lib/cyrus/bin/ctl_cyrusdb",
        ),
    ),
    "courier": Server(
        (
            "courier-base",
            "courier-imap",
            "courier-pop",
            "courier-authdaemon",
            "courier-authlib",
            "courier-authlib-userdb",
            "gamin",  # the file-alteration monitor its IMAP server waits for without it
            NO_FSYNC,
        ),
        (
            "usr/sbin/couriertcpd",
            "usr/sbin/authdaemond",
            "usr/bin/imapd",
            "usr/lib/courier/courier/courierpop3d",
            "usr/lib/courier/courier-authlib/authdaemond",
            "usr/lib/courier/courier/imaplogin",
            "usr/lib/courier/courier/courierpop3login",
            "usr/libexec/gam_server",
        ),
    ),
    "mailutils": Server(
        ("mailutils-imap4d", "mailutils-pop3d", "mailutils-common", NO_FSYNC),
        ("usr/sbin/imap4d", "usr/sbin/pop3d"),
    ),
}


def root_of(name: str) -> Path:
    return TOOLS / name / "root"


def _stamp(name: str) -> Path:
    return TOOLS / name / "complete"


def is_ready(name: str) -> bool:
    """The root is unpacked in full, from the packages this file names today."""
    stamp = _stamp(name)
    return stamp.exists() and stamp.read_text() == " ".join(SERVERS[name].packages)


def how_to_get(name: str) -> str:
    return (
        f"{name} is not unpacked in {root_of(name)}: run `scripts/bootstrap.sh test` (or "
        f"`python scripts/mail_servers.py {name}`) on Debian 12 with access to Debian's "
        f"package mirrors (`apt-get download {' '.join(SERVERS[name].packages)}` and the "
        "libraries they need); running it needs root (a private mount namespace)"
    )


def _installed(packages: list[str]) -> set[str]:
    status = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *packages],
        capture_output=True,
        text=True,
    )
    return {line.split()[0] for line in status.stdout.splitlines() if line.endswith(" installed")}


def _dependencies(packages: list[str]) -> set[str]:
    listing = subprocess.run(
        ["apt-cache", "depends", *packages], capture_output=True, text=True, check=True
    ).stdout
    found = set()
    for line in listing.splitlines():
        kind, _, name = line.strip().partition(" ")
        if kind.lstrip("|") in ("Depends:", "PreDepends:") and not name.startswith("<"):
            found.add(name.split(":")[0])  # libfoo:amd64 -> libfoo
    return found


def _is_library(package: str) -> bool:
    return (package.startswith("lib") and "perl" not in package) or package.endswith("-libs")


def packages_to_fetch(name: str) -> list[str]:
    """The server's packages, and the library packages they need (through each other) that
    are not installed on this machine."""
    wanted = list(SERVERS[name].packages)
    level = list(wanted)
    while level:
        new = sorted(d for d in _dependencies(level) if d not in wanted and _is_library(d))
        installed = _installed(new) if new else set()
        level = [d for d in new if d not in installed]
        wanted += level
    return wanted


def _merge_usr(root: Path) -> None:
    """On a merged-/usr system /lib, /bin and /sbin are links into /usr: move what the
    packages put there into usr/ too, so that one overlay of /usr shows all of it."""
    for top in ("lib", "lib64", "bin", "sbin"):
        source, host = root / top, Path("/") / top
        if source.is_dir() and not source.is_symlink() and host.is_symlink():
            target = root / "usr" / top
            target.mkdir(parents=True, exist_ok=True)
            shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
            shutil.rmtree(source)


def missing_libraries(name: str) -> set[str]:
    """The server's binaries that are missing, and the shared libraries they cannot find with
    the root's beside the host's."""
    root = root_of(name)
    paths = [str(p) for p in (root / "usr/lib").rglob("*") if p.is_dir() and p.name != "sasl2"]
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join([str(root / "usr/lib"), *paths])}
    missing: set[str] = set()
    for binary in SERVERS[name].binaries:
        if not (root / binary).exists():
            missing.add(binary)
            continue
        out = subprocess.run(
            ["ldd", str(root / binary)], capture_output=True, text=True, env=env
        ).stdout
        missing |= {line.split()[0] for line in out.splitlines() if "not found" in line}
    return missing


def _download(name: str, debs: Path) -> list[str]:
    """Download what ``debs`` lacks of the packages to fetch; their names."""
    packages = packages_to_fetch(name)
    have = {p.name.split("_")[0] for p in debs.glob("*.deb")}
    needed = [p for p in packages if p not in have]
    if needed:
        subprocess.run(["apt-get", "download", "-qq", *needed], cwd=debs, check=True)
    return packages


def fetch(name: str) -> Path:
    """Download and unpack ``name``'s packages (idempotent); the root's path."""
    if is_ready(name):
        return root_of(name)
    debs, root = TOOLS / name / "debs", root_of(name)
    debs.mkdir(parents=True, exist_ok=True)
    try:
        packages = _download(name, debs)
    except subprocess.CalledProcessError:  # no package lists yet, or stale ones
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        packages = _download(name, debs)
    _stamp(name).unlink(missing_ok=True)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for deb in sorted(debs.glob("*.deb")):
        if deb.name.split("_")[0] in packages:
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    _merge_usr(root)
    missing = missing_libraries(name)
    if missing:
        raise RuntimeError(f"{name}: the packages fetched lack {', '.join(sorted(missing))}")
    _stamp(name).write_text(" ".join(SERVERS[name].packages))
    return root


def main(names: list[str]) -> int:
    failed = False
    for name in names or ["cyrus"]:
        try:
            print(f"mail-servers: {name} in {fetch(name)}", file=sys.stderr)
        except (RuntimeError, OSError, subprocess.CalledProcessError) as error:
            print(f"mail-servers: {error}\n  {how_to_get(name)}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

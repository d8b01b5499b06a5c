"""Courier IMAP and POP3 (Courier mail server 1.0.16; IMAP, IMAPS, STARTTLS, POP3, POP3S)
from Debian 12's packages, unpacked, not installed (``scripts/mail_servers.py``).

``authdaemond`` (users in a userdb, the password crypt(3)-hashed) and one ``couriertcpd``
per listener run in the foreground as the test's own processes (``tests/harness/unpacked.py``)
as Debian's start scripts run them, with ``/etc/courier`` and ``/run/courier`` bound to the
test's temp dir. Mail is kept in Maildir and put in with APPEND as the user.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

from tests.harness.tls import TestPki
from tests.harness.unpacked import NO_FSYNC, UnpackedMailServer, crypt_sha512

ETC, RUN = "/etc/courier", "/run/courier"
LIB = "/usr/lib/courier/courier"
# Debian's start scripts' environment: config files sourced with `set -a`, then overrides.
START = "set -a; . {etc}/{protocol}d; . {etc}/{protocol}d-ssl; {overrides}; exec {tcpd}"
TCPD = "/usr/sbin/couriertcpd -address=127.0.0.1 -maxprocs=40 -maxperip=40 -nodnslookup"
TLS = "/usr/bin/couriertls -server -tcpd"
LISTENERS = {  # name: (protocol, overrides, wrapper, login program, server program)
    "imap": ("imap", "IMAP_STARTTLS=YES", "", f"{LIB}/imaplogin", "/usr/bin/imapd"),
    "imaps": ("imap", "IMAP_TLS=1", TLS, f"{LIB}/imaplogin", "/usr/bin/imapd"),
    "pop3": ("pop3", "POP3_STARTTLS=YES", "", f"{LIB}/courierpop3login", f"{LIB}/courierpop3d"),
    "pop3s": ("pop3", "POP3_TLS=1", TLS, f"{LIB}/courierpop3login", f"{LIB}/courierpop3d"),
}
SETTINGS = {  # appended to both protocols' -ssl files: later assignments win
    "TLS_CERTFILE": f"{ETC}/server.pem",
    "TLS_DHPARAMS": "",
    "TLS_CACHEFILE": "",
    "TLS_TRUSTCERTS": "",
    "IMAP_USELOCKS": "0",  # dot-locks are for shared folders; none here
}


class Courier(UnpackedMailServer):
    name = "courier"
    writable = (ETC, RUN)

    def __init__(self, *, pki: TestPki | None = None) -> None:
        super().__init__(pki=pki)
        etc = self.rw(ETC)
        shutil.copytree(self.unpacked_root / ETC.lstrip("/"), etc, dirs_exist_ok=True)
        (etc / "server.pem").write_bytes(
            self.pki.key_pem.read_bytes() + self.pki.cert_pem.read_bytes()
        )
        (etc / "server.pem").chmod(0o600)
        shutil.chown(etc / "server.pem", "nobody", "nogroup")  # TLS runs as ``courier``
        overrides = "".join(f'{key}="{value}"\n' for key, value in SETTINGS.items())
        for name in ("imapd-ssl", "pop3d-ssl"):
            with (etc / name).open("a") as config:
                config.write(overrides)
        with (etc / "authdaemonrc").open("a") as config:
            config.write(f'authmodulelist="authuserdb"\nauthdaemonvar={RUN}/authdaemon\n')
        (etc / "userdb").write_text("")
        (etc / "userdb").chmod(0o600)
        self.rw(RUN + "/authdaemon").mkdir()
        # Its POP3 STARTTLS looks the user ``courier`` up (nobody's ids here).
        for name, entry in (
            ("passwd", "courier:x:65534:65534::/nonexistent:/bin/false"),
            ("group", "courier:x:65534:"),
        ):
            host = Path("/etc", name).read_text()
            (self.root / "rw" / "etc" / name).write_text(f"{host.rstrip()}\n{entry}\n")
        (self.root / "mail").mkdir()

    def start(self) -> Courier:
        self._make_userdb()
        self.spawn(
            "sh",
            "-c",
            f"set -a; . {ETC}/authdaemonrc; exec /usr/lib/courier/courier-authlib/authdaemond",
        )
        for name, (protocol, overrides, wrapper, login, server) in LISTENERS.items():
            port = getattr(self.ports, name)
            tcpd = f"{TCPD} {port} {wrapper} {login} {server} Maildir"
            script = START.format(etc=ETC, protocol=protocol, overrides=overrides, tcpd=tcpd)
            clean = ("env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", f"LD_PRELOAD={NO_FSYNC}")
            self.spawn(*clean, "sh", "-c", script)
        self.wait_listening()
        return self

    def _make_userdb(self) -> None:
        subprocess.run(
            self.command("/usr/sbin/makeuserdb"), check=True, capture_output=True, text=True
        )

    def add_user(self, email: str | None = None, password: str = "secret") -> tuple[str, str]:
        email = email or f"user{uuid.uuid4().hex[:10]}@example.com"
        hashed = crypt_sha512(password)
        home = self.root / "mail" / email
        for sub in ("cur", "new", "tmp"):
            (home / "Maildir" / sub).mkdir(parents=True)
        subprocess.run(["chown", "-R", "nobody:nogroup", str(home)], check=True)
        with (self.rw(ETC) / "userdb").open("a") as users:
            users.write(
                f"{email}\tuid=65534|gid=65534|home={home}|mail={home}/Maildir|systempw={hashed}\n"
            )
        self._make_userdb()
        self.passwords[email] = password
        return email, password

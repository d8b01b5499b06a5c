"""A real Dovecot (IMAP, IMAPS, STARTTLS, POP3, POP3S) from a config in a temp dir.

Runs as root with mail stored as ``nobody``; every listener on 127.0.0.1 and a free port.
Users live in a passwd-file; mail is seeded straight into Maildir files, which is far
faster than APPEND (Dovecot indexes them on the first SELECT).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from mailintake_devstack.broker import free_port, stop_process, wait_for_port
from tests.harness.mailserver import Ports
from tests.harness.tls import TestPki, make_pki


class Dovecot:
    name = "dovecot"

    def __init__(
        self,
        *,
        pki: TestPki | None = None,
        extra_config: str = "",
        master_password: str = "master-secret",
        oauth2_introspection_url: str | None = None,
        tls: bool = True,
        connections_per_user: int = 100,
    ) -> None:
        if shutil.which("dovecot") is None:
            raise RuntimeError(
                "dovecot not found: run `make test` (installs dovecot-imapd and dovecot-pop3d "
                "with apt-get when root)"
            )
        if os.geteuid() != 0:
            raise RuntimeError("the Dovecot fixture runs Dovecot as root; run the tests as root")
        # base_dir holds Unix sockets (108-byte path limit): keep the root short.
        self.root = Path(tempfile.mkdtemp(prefix="midc", dir="/tmp"))
        self.root.chmod(0o755)  # the auth process (user dovecot) reads the passwd-files
        self.pki = pki or make_pki(self.root / "pki")
        self.connections_per_user = connections_per_user
        self.tls = tls  # False: a server without TLS at all (no STARTTLS, no IMAPS/POP3S)
        self.ports = Ports(
            free_port(), free_port() if tls else 0, free_port(), free_port() if tls else 0
        )
        self.master_password = master_password
        self.mail_root = self.root / "mail"
        self.mail_root.mkdir()
        shutil.chown(self.mail_root, "nobody", "nogroup")
        self._users = self.root / "users"
        self._users.mkdir()
        (self.root / "masters").write_text(f"ingest:{{PLAIN}}{master_password}::::::\n")
        self.config = self.root / "dovecot.conf"
        self.config.write_text(self._config(extra_config, oauth2_introspection_url))
        self._process: subprocess.Popen[bytes] | None = None
        self._seq = 0

    def _config(self, extra: str, introspection_url: str | None) -> str:
        r = self.root
        oauth_passdb = ""
        if introspection_url:
            # The auth process (user dovecot) reads the CA: a world-readable copy in the root.
            ca = r / "oauth2-ca.pem"
            ca.write_text(self.pki.ca_text)
            ca.chmod(0o644)
            (r / "oauth2.conf.ext").write_text(
                "introspection_mode = post\n"
                f"introspection_url = {introspection_url}\n"
                "force_introspection = yes\n"
                "username_attribute = username\n"
                "active_attribute = active\n"
                "active_value = true\n"
                f"tls_ca_cert_file = {ca}\n"
            )
            oauth_passdb = (
                "passdb {\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
                f"  args = {r}/oauth2.conf.ext\n}}\n"
            )
        return f"""
base_dir = {r}/run
state_dir = {r}/state
instance_name = mi-{uuid.uuid4().hex[:8]}
log_path = {r}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
{self._ssl_settings()}
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
auth_failure_delay = 0
auth_master_user_separator = *
mail_location = maildir:{self.mail_root}/%u/Maildir
mail_uid = nobody
mail_gid = nogroup
first_valid_uid = 65534
mail_fsync = never
passdb {{
  driver = passwd-file
  args = {r}/masters
  master = yes
  pass = yes
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self._users}/%u
}}
{oauth_passdb}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={self.mail_root}/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.ports.imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.ports.imaps}
    ssl = yes
  }}
}}
service pop3-login {{
  chroot =
  inet_listener pop3 {{
    address = 127.0.0.1
    port = {self.ports.pop3}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {self.ports.pop3s}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service stats {{
  unix_listener stats-reader {{
    mode = 0666
  }}
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
protocol imap {{
  mail_max_userip_connections = {self.connections_per_user}
}}
protocol pop3 {{
  pop3_uidl_format = %08Xu%08Xv
}}
{extra}
"""

    def _ssl_settings(self) -> str:
        if not self.tls:
            return "ssl = no"
        return (
            f"ssl = yes\nssl_cert = <{self.pki.cert_pem}\nssl_key = <{self.pki.key_pem}\n"
            "ssl_min_protocol = TLSv1.2"
        )

    @property
    def pid(self) -> int:
        """The master process's id (its workers are its children)."""
        assert self._process is not None, "not started"
        return self._process.pid

    def start(self) -> Dovecot:
        check = subprocess.run(
            ["doveconf", "-c", str(self.config), "-n"], capture_output=True, text=True
        )
        if check.returncode != 0:
            raise RuntimeError(f"invalid Dovecot config: {check.stderr}")
        self._process = subprocess.Popen(
            ["dovecot", "-F", "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in (self.ports.imap, self.ports.imaps, self.ports.pop3, self.ports.pop3s):
            if port:
                wait_for_port("127.0.0.1", port, timeout_s=10)
        return self

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def log(self) -> str:
        path = self.root / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # --- users and mail ------------------------------------------------------------------
    def add_user(self, email: str | None = None, password: str = "secret") -> tuple[str, str]:
        email = email or f"user{uuid.uuid4().hex[:10]}@example.com"
        # One passwd-file per user: Dovecot re-reads a changed passwd-file at most once a
        # second, so users added in quick succession would not all be visible in one file.
        (self._users / email).write_text(f"{email}:{{PLAIN}}{password}::::::\n")
        return email, password

    def maildir(self, email: str, folder: str = "INBOX") -> Path:
        base = self.mail_root / email / "Maildir"
        return base if folder.upper() == "INBOX" else base / f".{folder}"

    def seed(
        self,
        email: str,
        messages: Iterable[bytes],
        *,
        folder: str = "INBOX",
        seen: bool = False,
        received: datetime | None = None,
    ) -> int:
        """Write ``messages`` into the folder as Maildir files; return how many. ``received``
        sets their INTERNALDATE (Maildir keeps it in the file's mtime)."""
        directory = self.maildir(email, folder)
        for sub in ("cur", "new", "tmp"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        count = 0
        stamp = int(time.time())
        flags = "S" if seen else ""
        for message in messages:
            data = message.replace(b"\r\n", b"\n")
            crlf_size = len(data) + data.count(b"\n")
            self._seq += 1
            name = f"{stamp}.M{self._seq}P{os.getpid()}.mi,S={len(data)},W={crlf_size}:2,{flags}"
            path = directory / "cur" / name
            path.write_bytes(data)
            if received is not None:
                os.utime(path, (received.timestamp(), received.timestamp()))
            count += 1
        self._chown_tree(self.mail_root / email)
        return count

    @staticmethod
    def _chown_tree(path: Path) -> None:
        for dirpath, dirnames, filenames in os.walk(path):
            shutil.chown(dirpath, "nobody", "nogroup")
            for name in (*dirnames, *filenames):
                # Dovecot's own files (its locks) may come and go meanwhile.
                with contextlib.suppress(FileNotFoundError):
                    shutil.chown(os.path.join(dirpath, name), "nobody", "nogroup")
        parent = path.parent
        shutil.chown(parent, "nobody", "nogroup")

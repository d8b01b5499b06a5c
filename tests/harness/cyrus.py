"""A real Cyrus IMAP 3.6 (IMAP, IMAPS, STARTTLS, POP3, POP3S) from Debian 12's packages,
unpacked, not installed (``scripts/mail_servers.py``; they conflict with Dovecot in apt).

``cyrmaster`` runs in the foreground as the test's own process, in a private mount namespace
that shows the unpacked packages at their paths (``tests/harness/unpacked.py``); its daemons
run as ``nobody``; configuration, mail spool and the SASL password database live in a temp
dir. Users are entries in that sasldb (``saslpasswd2``); an admin creates each user's mailbox
over IMAP, and mail is put in with APPEND as the user. Cyrus rewrites what it is given: 8-bit
bytes in a header become ``X`` (``munge8bit``), so compare with what it serves.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from imapclient import IMAPClient

from mailintake_devstack.broker import free_port, stop_process, wait_for_port
from tests.harness.mailserver import Ports, append
from tests.harness.tls import TestPki, make_pki
from tests.harness.unpacked import UnpackedServer

ADMIN = "cyrusadmin"
CONFIG_SUBDIRS = ("db", "socket", "proc", "log", "msg", "ptclient", "quota", "user", "sieve")


class Cyrus:
    name = "cyrus"

    def __init__(self, *, pki: TestPki | None = None) -> None:
        self.unpacked = UnpackedServer("cyrus")
        self.version = self.unpacked.package_version("cyrus-imapd")
        # Unix sockets under it (108-byte path limit): keep the root short.
        self.root = Path(tempfile.mkdtemp(prefix="micy", dir="/tmp"))
        self.pki = pki or make_pki(self.root / "pki")
        self.ports = Ports(free_port(), free_port(), free_port(), free_port())
        self.admin_password = uuid.uuid4().hex
        self._passwords: dict[str, str] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._write_config()

    def _write_config(self) -> None:
        r = self.root
        for sub in CONFIG_SUBDIRS:
            (r / "conf" / sub).mkdir(parents=True)
        (r / "spool").mkdir()
        (r / "run").mkdir()
        # The daemons run as nobody: their own copy of the key.
        shutil.copy(self.pki.cert_pem, r / "server.pem")
        shutil.copy(self.pki.key_pem, r / "server.key")
        self.imapd_conf = r / "imapd.conf"
        self.imapd_conf.write_text(
            f"configdirectory: {r}/conf\n"
            f"partition-default: {r}/spool\n"
            "defaultpartition: default\n"
            f"proc_path: {r}/run/proc\n"
            f"mboxname_lockpath: {r}/run/lock\n"
            f"lmtpsocket: {r}/run/lmtp\n"
            f"idlesocket: {r}/run/idle\n"
            f"notifysocket: {r}/run/notify\n"
            "cyrus_user: nobody\n"
            "cyrus_group: nogroup\n"
            f"admins: {ADMIN}\n"
            "sasl_pwcheck_method: auxprop\n"
            "sasl_auxprop_plugin: sasldb\n"
            f"sasl_sasldb_path: {r}/sasldb2\n"
            "sasl_mech_list: PLAIN LOGIN\n"
            "allowplaintext: yes\n"
            "unixhierarchysep: yes\n"
            "virtdomains: userid\n"
            "failedloginpause: 0\n"  # 3 s after each wrong password otherwise
            f"tls_server_cert: {r}/server.pem\n"
            f"tls_server_key: {r}/server.key\n"
        )
        conf = f"-C {self.imapd_conf}"  # cyrmaster does not pass its -C on to its children
        p = self.ports
        (r / "cyrus.conf").write_text(
            "START {\n"
            f'  recover cmd="ctl_cyrusdb {conf} -r"\n'
            "}\n"
            "SERVICES {\n"
            f'  imap cmd="imapd {conf}" listen="127.0.0.1:{p.imap}" prefork=1\n'
            f'  imaps cmd="imapd -s {conf}" listen="127.0.0.1:{p.imaps}" prefork=1\n'
            f'  pop3 cmd="pop3d {conf}" listen="127.0.0.1:{p.pop3}" prefork=1\n'
            f'  pop3s cmd="pop3d -s {conf}" listen="127.0.0.1:{p.pop3s}" prefork=1\n'
            "}\n"
            "EVENTS {\n"
            "}\n"
        )

    def start(self) -> Cyrus:
        self._saslpasswd(ADMIN, self.admin_password)
        subprocess.run(["chown", "-R", "nobody:nogroup", str(self.root)], check=True)
        self._process = subprocess.Popen(
            self.unpacked.command(
                "/usr/sbin/cyrmaster",
                *("-C", str(self.imapd_conf), "-M", str(self.root / "cyrus.conf"), "-D"),
            ),
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CYRUS_USER": "nobody"},
            stdout=(self.root / "master.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for port in (self.ports.imap, self.ports.imaps, self.ports.pop3, self.ports.pop3s):
            wait_for_port("127.0.0.1", port, timeout_s=20)
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
        return (self.root / "master.log").read_text(errors="replace")

    def _saslpasswd(self, user: str, password: str) -> None:
        login, _, realm = user.partition("@")
        realm_args = ("-u", realm) if realm else ()
        subprocess.run(
            self.unpacked.command(
                "/usr/sbin/saslpasswd2",
                *("-f", str(self.root / "sasldb2"), *realm_args, "-c", "-p", login),
            ),
            input=password.encode(),
            check=True,
            capture_output=True,
        )

    def _session(self, user: str, password: str) -> IMAPClient:
        client = IMAPClient("127.0.0.1", self.ports.imap, ssl=False)
        client.login(user, password)
        return client

    # --- users and mail ------------------------------------------------------------------
    def add_user(self, email: str | None = None, password: str = "secret") -> tuple[str, str]:
        email = email or f"user{uuid.uuid4().hex[:10]}@example.com"
        self._saslpasswd(email, password)
        with self._session(ADMIN, self.admin_password) as admin:
            admin.create_folder(f"user/{email}")
        self._passwords[email] = password
        return email, password

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
        with self._session(email, self._passwords[email]) as client:
            return append(client, folder, messages, seen=seen, received=received)

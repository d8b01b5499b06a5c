"""A real Cyrus IMAP 3.6 (IMAP, IMAPS, STARTTLS, POP3, POP3S) from Debian 12's packages,
unpacked, not installed (``scripts/mail_servers.py``; they conflict with Dovecot in apt).

``cyrmaster`` runs in the foreground as the test's own process, with the unpacked packages
at their paths (``tests/harness/unpacked.py``); its daemons run as ``nobody``;
configuration, mail spool and the SASL password database live in a temp dir. Users are
entries in that sasldb (``saslpasswd2``); an admin creates each user's mailbox over IMAP,
and mail is put in with APPEND as the user. Cyrus rewrites what it is given: 8-bit bytes in
a header become ``X`` (``munge8bit``), so compare with what it serves.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid

from imapclient import IMAPClient

from tests.harness.tls import TestPki
from tests.harness.unpacked import UnpackedMailServer

ADMIN = "cyrusadmin"
CONFIG_SUBDIRS = ("db", "socket", "proc", "log", "msg", "ptclient", "quota", "user", "sieve")


class Cyrus(UnpackedMailServer):
    name = "cyrus"

    def __init__(self, *, pki: TestPki | None = None) -> None:
        super().__init__(pki=pki)
        self.admin_password = uuid.uuid4().hex
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
        self.spawn(
            "/usr/sbin/cyrmaster",
            *("-C", str(self.imapd_conf), "-M", str(self.root / "cyrus.conf"), "-D"),
            # Its own pid file: the default, /run/cyrus-master.pid, is locked by any other
            # instance (parallel test workers).
            *("-p", str(self.root / "master.pid")),
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CYRUS_USER": "nobody"},
        )
        self.wait_listening()
        return self

    def _saslpasswd(self, user: str, password: str) -> None:
        login, _, realm = user.partition("@")
        realm_args = ("-u", realm) if realm else ()
        sasldb = str(self.root / "sasldb2")
        subprocess.run(
            self.command("/usr/sbin/saslpasswd2", "-f", sasldb, *realm_args, "-c", "-p", login),
            input=password.encode(),
            check=True,
            capture_output=True,
        )

    def add_user(self, email: str | None = None, password: str = "secret") -> tuple[str, str]:
        email = email or f"user{uuid.uuid4().hex[:10]}@example.com"
        self._saslpasswd(email, password)
        with IMAPClient("127.0.0.1", self.ports.imap, ssl=False) as admin:
            admin.login(ADMIN, self.admin_password)
            admin.create_folder(f"user/{email}")
        self.passwords[email] = password
        return email, password

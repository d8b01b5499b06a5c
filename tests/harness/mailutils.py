"""GNU Mailutils 3.15 ``imap4d`` and ``pop3d`` (IMAP, IMAPS, STARTTLS, POP3, POP3S) from
Debian 12's packages, unpacked, not installed (``scripts/mail_servers.py``).

Each daemon runs in the foreground as the test's own process (``tests/harness/unpacked.py``)
from a config file in a temp dir. Users are virtual-domain entries (``virtdomain``: one
passwd-style file per domain, the password crypt(3)-hashed); mail is kept in Maildir and put
in with APPEND as the user. ``imap4d`` ignores APPEND's flags and date (a message's
INTERNALDATE is its Date header): \\Seen is set with a STORE after, and a test that needs
another arrival date is skipped here.
"""

from __future__ import annotations

import ssl
import uuid
from collections.abc import Iterable
from datetime import datetime

import pytest
from imapclient import IMAPClient

from tests.harness.tls import TestPki
from tests.harness.unpacked import UnpackedMailServer, crypt_sha512


class Mailutils(UnpackedMailServer):
    name = "mailutils"

    def __init__(self, *, pki: TestPki | None = None) -> None:
        super().__init__(pki=pki)
        (self.root / "domains").mkdir()
        (self.root / "mail").mkdir()

    def _config(self, plain: int, secure: int) -> str:
        r = self.root
        return (
            "logging { syslog false; };\n"
            "auth { authentication generic; authorization virtdomain; };\n"
            f'virtdomain {{ passwd-dir "{r}/domains"; }};\n'
            "mailbox { mailbox-type maildir; "
            f'mailbox-pattern "maildir://{r}/mail/${{user}}"; }};\n'
            f'tls {{ ssl-certificate-file "{self.pki.cert_pem}"; '
            f'ssl-key-file "{self.pki.key_pem}"; }};\n'
            "tls-file-checks { key-file none; cert-file none; ca-file none; };\n"
            "mandatory-locking { enable false; };\n"
            "mode daemon;\nforeground true;\n"
            f"server 127.0.0.1:{plain} {{ tls-mode ondemand; }};\n"
            f"server 127.0.0.1:{secure} {{ tls-mode connection; }};\n"
        )

    def start(self) -> Mailutils:
        for daemon, plain, secure in (
            ("imap4d", self.ports.imap, self.ports.imaps),
            ("pop3d", self.ports.pop3, self.ports.pop3s),
        ):
            config = self.root / f"{daemon}.conf"
            config.write_text(self._config(plain, secure))
            self.spawn(f"/usr/sbin/{daemon}", f"--config-file={config}")
        self.wait_listening()
        return self

    def add_user(self, email: str | None = None, password: str = "secret") -> tuple[str, str]:
        email = email or f"user{uuid.uuid4().hex[:10]}@example.com"
        login, _, domain = email.partition("@")
        hashed = crypt_sha512(password)
        for sub in ("cur", "new", "tmp"):  # an empty INBOX (else APPEND says TRYCREATE)
            (self.root / "mail" / login / "INBOX" / sub).mkdir(parents=True)
        with (self.root / "domains" / domain).open("a") as users:
            users.write(f"{login}:{hashed}:0:0::{self.root}/mail/{login}:/bin/false\n")
        self.passwords[email] = password
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
        if received is not None:
            pytest.skip("Mailutils' imap4d takes INTERNALDATE from the Date header, not APPEND")
        count = super().seed(email, messages, folder=folder)
        if seen and count:
            context = ssl.create_default_context(cafile=str(self.pki.ca_pem))
            with IMAPClient("127.0.0.1", self.ports.imaps, ssl=True, ssl_context=context) as c:
                c.login(email, self.passwords[email])
                last = c.select_folder(folder)[b"UIDNEXT"] - 1
                c.add_flags(list(range(last - count + 1, last + 1)), [rb"\Seen"])
        return count

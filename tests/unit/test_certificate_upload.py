"""Reading an uploaded certificate and key: either order in PEM, keys with a passphrase."""

from __future__ import annotations

import pytest

from mailintake_config_api.certificates import CertificateError, read_upload
from tests.harness.smime import identity


def test_the_key_may_come_before_or_after_the_certificate() -> None:
    alice = identity("alice")
    for pem in (
        alice.certificate_pem + alice.key_pem("pass"),
        alice.key_pem("pass") + alice.certificate_pem,
    ):
        upload = read_upload(pem.decode(), None, "pass")
        assert upload.certificate == alice.certificate
        assert "PRIVATE KEY" in upload.private_key_pem


def test_no_key_a_wrong_passphrase_and_a_foreign_key_are_refused() -> None:
    alice, bob = identity("alice"), identity("bob", kind="ec")
    cases = {
        "no readable private key": (alice.certificate_pem.decode(), None),
        "passphrase": ((alice.certificate_pem + alice.key_pem("right")).decode(), "wrong"),
        "does not belong": ((alice.certificate_pem + bob.key_pem()).decode(), None),
    }
    for expected, (pem, passphrase) in cases.items():
        with pytest.raises(CertificateError, match=expected):
            read_upload(pem, None, passphrase)

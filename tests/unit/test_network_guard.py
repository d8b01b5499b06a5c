"""The outbound guard's rules: built-in denials, operator denials, exceptions, and a connection
that goes only to an address that was checked."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from mailintake_shared.events import ErrorKind
from mailintake_shared.mailbox.network import AddressDeniedError, NetworkPolicy


@pytest.mark.parametrize(
    ("address", "denied_by"),
    [
        ("127.0.0.1", "127.0.0.0/8"),
        ("127.5.6.7", "127.0.0.0/8"),
        ("::1", "::1/128"),
        ("::ffff:127.0.0.1", "127.0.0.0/8"),  # IPv4-mapped: the same host
        ("169.254.169.254", "169.254.0.0/16"),  # cloud metadata
        ("fe80::1%eth0", "fe80::/10"),
        ("0.0.0.0", "0.0.0.0/8"),
        ("224.0.0.1", "224.0.0.0/4"),
        # Every cloud metadata endpoint the major clouds document.
        ("fd00:ec2::254", "fd00:ec2::254/128"),  # AWS, IPv6
        ("fd20:ce::254", "fd20:ce::254/128"),  # GCP, IPv6
        ("fd00:c1::a9fe:a9fe", "fd00:c1::a9fe:a9fe/128"),  # Oracle Cloud, IPv6
        ("100.100.100.200", "100.100.100.200/32"),  # Alibaba Cloud
        ("168.63.129.16", "168.63.129.16/32"),  # Azure's WireServer
        ("169.254.0.23", "169.254.0.0/16"),  # Tencent Cloud
        # IPv6 forms of a denied IPv4 address: checked by the IPv4 rules.
        ("::ffff:169.254.169.254", "169.254.0.0/16"),  # IPv4-mapped
        ("::127.0.0.1", "127.0.0.0/8"),  # IPv4-compatible
        ("::a9fe:a9fe", "169.254.0.0/16"),  # IPv4-compatible, hexadecimal
        ("64:ff9b::a9fe:a9fe", "169.254.0.0/16"),  # NAT64 (RFC 6052)
        ("64:ff9b::100.100.100.200", "100.100.100.200/32"),
        ("2002:a9fe:a9fe::1", "169.254.0.0/16"),  # 6to4 (RFC 3056)
        ("2002:7f00:1::", "127.0.0.0/8"),
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "127.0.0.0/8"),  # Teredo client 127.0.0.1
        ("64:ff9b::cb00:7107", None),  # NAT64 of 203.0.113.7: a mail server's
        ("2002:cb00:7107::1", None),
        ("100.64.0.1", None),  # shared address space: deploy/ denies it where pods live
        ("10.1.2.3", None),  # private networks host mail servers
        ("192.168.1.10", None),
        ("203.0.113.7", None),
        ("2001:db8::25", None),
    ],
)
def test_built_in_denials(address: str, denied_by: str | None) -> None:
    network = NetworkPolicy().denied_by(address)
    assert (str(network) if network else None) == denied_by


def test_operator_denials_and_exceptions() -> None:
    policy = NetworkPolicy.of(allow=["127.0.0.1/32", "10.9.0.0/16"], deny=["10.0.0.0/8"])
    assert policy.denied_by("127.0.0.1") is None
    assert str(policy.denied_by("127.0.0.2")) == "127.0.0.0/8"
    assert str(policy.denied_by("10.1.0.1")) == "10.0.0.0/8"
    assert policy.denied_by("10.9.0.1") is None  # an exception inside a denied range
    assert str(policy.denied_by("169.254.169.254")) == "169.254.0.0/16"
    assert str(policy.denied_by("64:ff9b::a01:1")) == "10.0.0.0/8"  # NAT64 of a denied range
    assert policy.denied_by("64:ff9b::a09:1") is None  # … and of an exception in it
    assert policy.denied_by("::ffff:127.0.0.1") is None
    assert str(policy.denied_by("2002:7f00:2::")) == "127.0.0.0/8"


def test_a_name_that_resolves_to_loopback_is_refused_before_any_connection() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(0.2)
        port = listener.getsockname()[1]
        with pytest.raises(AddressDeniedError) as refused:
            NetworkPolicy().connect("localhost", port, timeout=2)
        assert refused.value.kind is ErrorKind.ADDRESS_DENIED
        assert "localhost resolves to" in str(refused.value)
        assert "MAILINTAKE_OUTBOUND_ALLOW_CIDRS" in str(refused.value)
        with pytest.raises(TimeoutError):
            listener.accept()  # nothing ever connected
        allowed = NetworkPolicy.of(allow=["127.0.0.0/8", "::1/128"])
        with allowed.connect("localhost", port, timeout=2) as sock:
            peer, _ = listener.accept()
            peer.close()
            assert sock.getpeername()[0] in ("127.0.0.1", "::1")


def test_the_socket_goes_to_the_address_that_was_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A name resolved once: a resolver that answers differently the second time (DNS
    rebinding) is never asked again."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        calls: list[str] = []
        real = socket.getaddrinfo

        def rebinding(host: str, *args: Any, **kwargs: Any) -> Any:
            calls.append(host)
            target = "127.0.0.1" if len(calls) == 1 else "169.254.169.254"
            return real(target, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", rebinding)
        policy = NetworkPolicy.of(allow=["127.0.0.1/32"])
        with policy.connect("mail.example.test", port, timeout=2) as sock:
            assert sock.getpeername() == ("127.0.0.1", port)
        assert calls == ["mail.example.test"]


def test_mail_sockets_send_each_line_at_once() -> None:
    """``TCP_NODELAY``: imaplib writes an AUTHENTICATE continuation and its CRLF in two
    pieces; with Nagle's algorithm the second waits for the server's delayed ACK (40 ms on
    Linux) in every login."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        policy = NetworkPolicy.of(allow=["127.0.0.1/32"])
        with policy.connect("127.0.0.1", port, timeout=2) as sock:
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0

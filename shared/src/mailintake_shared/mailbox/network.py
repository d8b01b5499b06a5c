"""The outbound connection guard: which addresses a mail connection may reach.

Test connection, estimates and polls connect to a host an API user typed in. So that this
cannot be turned against the cluster's own services — loopback, link-local, every cloud
metadata endpoint the major clouds document, or any range an operator denies — the host is
resolved once, every address it resolves to is checked (an IPv6 address that carries an
IPv4 one — mapped, compatible, NAT64, 6to4, Teredo — by the IPv4 rules too), and the socket
connects to a checked address; TLS still verifies the certificate against the host's name.
A name that resolves elsewhere the second time (DNS rebinding) gets nowhere: there is no
second time.

``MAILINTAKE_OUTBOUND_DENY_CIDRS`` adds ranges to the built-in ones (private networks, and
the shared address space 100.64.0.0/10 but for Alibaba's metadata address in it, are
reachable by default: mail servers live there; deploy/ denies the cluster's ranges);
``MAILINTAKE_OUTBOUND_ALLOW_CIDRS`` makes exceptions to both, for a mail server on the same
host or a lab network.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from mailintake_shared.events import ErrorKind
from mailintake_shared.mailbox.deadline import track
from mailintake_shared.mailbox.errors import PollError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALWAYS_DENIED: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "0.0.0.0/8",  # "this network"
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local: the metadata endpoint 169.254.169.254 of AWS, GCP,
        # Azure, Oracle, DigitalOcean, OpenStack …, and Tencent's 169.254.0.23
        "100.100.100.200/32",  # Alibaba Cloud's metadata endpoint
        "168.63.129.16/32",  # Azure's WireServer (the host's agent channel)
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        "::/128",
        "::1/128",
        "fe80::/10",
        "ff00::/8",
        "fd00:ec2::254/128",  # AWS's IPv6 metadata endpoint (inside fc00::/7)
        "fd20:ce::254/128",  # GCP's IPv6 metadata endpoint
        "fd00:c1::a9fe:a9fe/128",  # Oracle Cloud's IPv6 metadata endpoint
    )
)
# IPv6 forms that carry an IPv4 address: the IPv4 address is checked by the IPv4 rules.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052's well-known prefix
_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated IPv4-compatible (::a.b.c.d)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address stands for or leads to: IPv4-mapped
    (``::ffff:a.b.c.d``) and IPv4-compatible (``::a.b.c.d``), NAT64 (``64:ff9b::/96``,
    RFC 6052), 6to4 (``2002::/16``, RFC 3056) and Teredo (``2001::/32``, RFC 4380: its
    server and client)."""
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip in _COMPATIBLE and int(ip) > 1:  # not :: or ::1
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip in _NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    return found


class AddressDeniedError(PollError):
    def __init__(self, host: str, address: str, network: IPNetwork) -> None:
        super().__init__(
            ErrorKind.ADDRESS_DENIED,
            f"{host} resolves to {address}, in {network}, which mail connections may not reach "
            "(MAILINTAKE_OUTBOUND_ALLOW_CIDRS makes exceptions)",
        )


def parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr.strip(), strict=False) for cidr in cidrs if cidr.strip())


@dataclass(frozen=True)
class NetworkPolicy:
    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(cls, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> NetworkPolicy:
        return cls(parse_networks(allow), parse_networks(deny))

    def denied_by(self, address: str) -> IPNetwork | None:
        """The denied network ``address`` is in, or None when it may be reached. An IPv6
        address that carries an IPv4 one (mapped, compatible, NAT64, 6to4, Teredo) is
        denied when that IPv4 address is."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
        if isinstance(ip, ipaddress.IPv6Address):
            for ipv4 in embedded_ipv4(ip):
                if (network := self._denied(ipv4)) is not None:
                    return network
            if ip.ipv4_mapped is not None:
                return None  # ::ffff:a.b.c.d is a.b.c.d, allowed above
        return self._denied(ip)

    def _denied(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> IPNetwork | None:
        if any(ip in network for network in self.allow):
            return None
        return next((n for n in (*ALWAYS_DENIED, *self.deny) if ip in n), None)

    def resolve(self, host: str, port: int) -> list[tuple[int, tuple[str, int]]]:
        """The host's addresses (family, sockaddr), each checked: one denied address refuses
        the host (a name that also points inside the cluster is not a mail server)."""
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses: list[tuple[int, tuple[str, int]]] = [
            (family, (str(sa[0]), int(sa[1]))) for family, _, _, _, sa in found
        ]
        for _, (address, _) in addresses:
            network = self.denied_by(address)
            if network is not None:
                raise AddressDeniedError(host, address, network)
        return addresses

    def connect(self, host: str, port: int, timeout: float | None) -> socket.socket:
        """``socket.create_connection``, to checked addresses only (and tracked by the
        session's deadline, ``deadline.py``), with ``TCP_NODELAY``.

        Mail protocols are a conversation of short lines. imaplib writes some of its lines
        in two pieces (an ``AUTHENTICATE`` continuation, then its CRLF); with Nagle's
        algorithm the second waits for the ACK of the first, which the server delays (up
        to 40 ms on Linux) until the line is whole: a stall in every login, as asyncio and
        Go avoid by setting ``TCP_NODELAY`` on every TCP connection."""
        error: OSError | None = None
        for family, address in self.resolve(host, port):
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(address)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return track(sock)
            except OSError as exc:
                sock.close()
                error = exc
        raise error or OSError(f"{host} has no address")

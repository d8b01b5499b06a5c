"""The outbound connection guard: which addresses a mail connection may reach.

Test connection, estimates and polls connect to a host an API user typed in. So that this
cannot be turned against the cluster's own services — loopback, link-local (the cloud
metadata endpoint at 169.254.169.254), or any range an operator denies — the host is resolved
once, every address it resolves to is checked, and the socket connects to a checked address;
TLS still verifies the certificate against the host's name. A name that resolves elsewhere
the second time (DNS rebinding) gets nowhere: there is no second time.

``MAILINTAKE_OUTBOUND_DENY_CIDRS`` adds ranges to the built-in ones (private networks are
reachable by default: mail servers live there); ``MAILINTAKE_OUTBOUND_ALLOW_CIDRS`` makes
exceptions to both, for a mail server on the same host or a lab network.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass

from mailintake_shared.events import ErrorKind
from mailintake_shared.mailbox.errors import PollError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALWAYS_DENIED: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(cidr)
    for cidr in (
        "0.0.0.0/8",  # "this network"
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local: cloud metadata endpoints
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, broadcast
        "::/128",
        "::1/128",
        "fe80::/10",
        "ff00::/8",
        "fd00:ec2::254/128",  # AWS's IPv6 metadata endpoint (inside fc00::/7)
    )
)


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
        """The denied network ``address`` is in, or None when it may be reached."""
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
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
        """``socket.create_connection``, to checked addresses only."""
        error: OSError | None = None
        for family, address in self.resolve(host, port):
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(address)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise error or OSError(f"{host} has no address")

"""Ports for servers that bind them later: the kernel offers a closed probe's port again, so
two servers started together could get the same one."""

from __future__ import annotations

from mailintake_devstack.broker import free_port, reserve_port


def test_free_port_never_hands_out_a_port_twice_or_a_reserved_one() -> None:
    reserved = free_port() + 1
    reserve_port(reserved)
    ports = [free_port() for _ in range(900)]  # within the ports it remembers
    assert len(set(ports)) == len(ports)
    assert reserved not in ports

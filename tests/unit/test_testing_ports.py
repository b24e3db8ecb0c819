"""The test harness' free ports: never one the kernel hands to outgoing connections, never the same twice."""

from __future__ import annotations

import socket
from pathlib import Path

from edgetwin.testing import free_port


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    ephemeral_start = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(port < ephemeral_start for port in ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))


def test_a_port_in_use_is_not_returned() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        held = taken.getsockname()[1]
        assert held not in {free_port() for _ in range(300)}

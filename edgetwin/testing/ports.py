"""Free TCP ports on the loopback interface, for servers a test or the demo starts.

A port is only known free at the moment it is checked: until the server binds it, someone else may take it.
Two takers are common on a busy machine. The kernel hands ephemeral ports (``ip_local_port_range``) to every
outgoing connection, so a port the OS picked for ``bind(("", 0))`` can become the local end of a client socket
a moment later; and one process asking twice can be given the same port twice. So ports are drawn at random
below the ephemeral range, where no connection lands, and never handed out twice by one process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOWEST = 15000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_given: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port free on ``host`` now, outside the ephemeral range and not returned before."""
    top = _ephemeral_start()
    if top - _LOWEST >= 1000:
        for _ in range(200):
            port = random.randrange(_LOWEST, top)
            if port not in _given and _bindable(host, port):
                _given.add(port)
                return port
    # A machine with an unusual range (or 200 taken ports in a row): let the OS pick.
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in _given:
            _given.add(port)
            return port

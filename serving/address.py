"""``host:port`` addresses as edgetwin's settings write them (``[::1]:10550`` for IPv6)."""

from __future__ import annotations

__all__ = ["host_of", "join_host_port", "split_host_port"]


def host_of(address: str) -> str:
    """The host of ``host:port``, without IPv6 brackets ("" when there is none)."""
    return address.rpartition(":")[0].removeprefix("[").removesuffix("]")


def split_host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port`` (port 0 lets the OS choose), or None when it is not of that form."""
    _, sep, port = address.rpartition(":")
    host = host_of(address)
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        return None
    return host, int(port)


def join_host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets (``[::1]:10550``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

"""Where and how to reach the MQTT broker: :class:`BrokerSettings` and the broker URL parser."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from eventbus.errors import EventBusConfigError

__all__ = ["BrokerAddress", "BrokerSettings", "parse_broker_url"]

_PLAIN_SCHEMES = frozenset({"tcp", "mqtt"})
_TLS_SCHEMES = frozenset({"ssl", "mqtts", "tls"})


@dataclass(frozen=True)
class BrokerAddress:
    """A parsed broker URL."""

    host: str
    port: int
    tls: bool

    @property
    def url(self) -> str:
        """The canonical URL (``tcp://`` or ``ssl://``), brackets around an IPv6 host."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'ssl' if self.tls else 'tcp'}://{host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse ``tcp://`` / ``mqtt://`` or ``ssl://`` / ``mqtts://`` / ``tls://`` ``host[:port]`` URLs.

    Default ports: 1883 (plain) and 8883 (TLS).

    Credentials do not belong in the URL (they would end up in logs): use ``username`` / ``password``.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise EventBusConfigError("url", url, str(exc)) from exc
    scheme = parts.scheme.lower()
    if scheme not in _PLAIN_SCHEMES | _TLS_SCHEMES:
        raise EventBusConfigError("url", url, "scheme must be tcp://, mqtt://, ssl://, mqtts:// or tls://")
    if parts.username is not None or parts.password is not None:
        redacted = f"{scheme}://***@{parts.hostname}"
        raise EventBusConfigError("url", redacted, "put credentials in username/password, not in the URL")
    if not parts.hostname:
        raise EventBusConfigError("url", url, "no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise EventBusConfigError("url", url, "must be scheme://host[:port] only")
    tls = scheme in _TLS_SCHEMES
    return BrokerAddress(host=parts.hostname, port=port or (8883 if tls else 1883), tls=tls)


@dataclass(frozen=True)
class BrokerSettings:
    """Where and how to connect to the broker. The password never appears in ``repr`` or logs.

    ``ca_file`` verifies the broker (else the system CAs), ``cert_file`` + ``key_file`` authenticate the
    client (mutual TLS); all three need an ``ssl://`` URL. ``max_inflight`` bounds the QoS 1 messages handed
    to the connection and not yet acknowledged: :meth:`MqttClient.publish` waits while the window is full.
    Reconnects back off from ``reconnect_min`` to ``reconnect_max`` seconds, with jitter. Sessions are MQTT
    3.1.1's: the broker keeps one until the client ends it or the broker's expiry runs out.
    """

    url: str = "tcp://127.0.0.1:1883"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive: float = 30.0
    max_inflight: int = 100
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0

    def __post_init__(self) -> None:
        address = parse_broker_url(self.url)
        tls_files = {"ca_file": self.ca_file, "cert_file": self.cert_file, "key_file": self.key_file}
        for name, path in tls_files.items():
            if path is not None and not address.tls:
                raise EventBusConfigError(name, str(path), f"needs an ssl:// URL, got {self.url}")
        if (self.cert_file is None) != (self.key_file is None):
            raise EventBusConfigError("key_file", str(self.key_file), "cert_file and key_file go together")
        if self.password is not None and self.username is None:
            raise EventBusConfigError("username", None, "a password needs a username")
        if self.keepalive < 1:
            raise EventBusConfigError("keepalive", self.keepalive, "must be at least 1 second")
        if self.max_inflight < 1:
            raise EventBusConfigError("max_inflight", self.max_inflight, "must be at least 1")
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise EventBusConfigError(
                "reconnect_min",
                self.reconnect_min,
                f"must be > 0 and <= reconnect_max ({self.reconnect_max})",
            )

    @property
    def address(self) -> BrokerAddress:
        """The parsed :attr:`url`."""
        return parse_broker_url(self.url)

    def ssl_context(self) -> ssl.SSLContext | None:
        """The client TLS context for an ``ssl://`` URL (None for ``tcp://``); bad files are config errors."""
        if not self.address.tls:
            return None
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise EventBusConfigError("ca_file", str(self.ca_file), str(exc)) from exc
        if self.cert_file is not None and self.key_file is not None:
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise EventBusConfigError("cert_file", str(self.cert_file), str(exc)) from exc
        return context

"""Prometheus metrics of the MQTT clients, registered once per registry and labelled by client id."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["ClientMetrics"]


class _Counter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


class _NoCounter:
    """Stands in for a counter when no registry was given, so the hot path never tests for None."""

    def inc(self, amount: float = 1) -> None:
        """Count nothing."""


class _Families:
    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["client"]
        self.received = Counter(
            "edgetwin_mqtt_messages_received", "MQTT messages received.", labels, registry=registry
        )
        self.published = Counter(
            "edgetwin_mqtt_messages_published",
            "MQTT messages published (QoS 1: acknowledged by the broker).",
            labels,
            registry=registry,
        )
        self.publish_errors = Counter(
            "edgetwin_mqtt_publish_errors", "MQTT publishes refused or abandoned.", labels, registry=registry
        )
        self.reconnects = Counter(
            "edgetwin_mqtt_reconnects",
            "MQTT connections re-established after a loss.",
            labels,
            registry=registry,
        )
        self.connected = Gauge(
            "edgetwin_mqtt_connected", "1 while the MQTT client is connected.", labels, registry=registry
        )
        self.inflight = Gauge(
            "edgetwin_mqtt_inflight",
            "Publishes handed over and not yet acknowledged.",
            labels,
            registry=registry,
        )


# Several clients (twin, mappers in one process, tests) may share a registry: one family set per registry.
_FAMILIES: weakref.WeakKeyDictionary[CollectorRegistry, _Families] = weakref.WeakKeyDictionary()


class ClientMetrics:
    """The metrics of one client: counters for messages in / out, publish errors, reconnects, two gauges."""

    def __init__(
        self, registry: CollectorRegistry | None, client_id: str, inflight: Callable[[], int]
    ) -> None:
        self._client_id = client_id
        self._families: _Families | None = None
        self.received: _Counter = _NoCounter()
        self.published: _Counter = _NoCounter()
        self.publish_errors: _Counter = _NoCounter()
        self.reconnects: _Counter = _NoCounter()
        if registry is None:
            return
        families = _FAMILIES.get(registry)
        if families is None:
            families = _FAMILIES[registry] = _Families(registry)
        self._families = families
        self.received = families.received.labels(client_id)
        self.published = families.published.labels(client_id)
        self.publish_errors = families.publish_errors.labels(client_id)
        self.reconnects = families.reconnects.labels(client_id)
        # Read at scrape time only: no cost per message.
        families.inflight.labels(client_id).set_function(inflight)

    def set_connected(self, connected: bool) -> None:
        """Record the connection state."""
        if self._families is not None:
            self._families.connected.labels(self._client_id).set(1 if connected else 0)

    def close(self) -> None:
        """Drop the in-flight gauge, which refers to the client (the counters stay: they are cumulative)."""
        if self._families is not None:
            self._families.inflight.remove(self._client_id)
            self._families.connected.labels(self._client_id).set(0)

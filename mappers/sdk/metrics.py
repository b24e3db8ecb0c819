"""Prometheus metrics of a mapper, per device: reads, writes, errors, device requests and their latency."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client import Enum as EnumMetric

from mappers.sdk.errors import MapperError

DEVICE_STATES = ("unknown", "online", "unhealthy", "offline")


class MapperMetrics:
    """The metrics on one registry (or on none, when ``registry`` is ``None``: counted but not served)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.reads = Counter(
            "edgetwin_mapper_reads_total", "Property values read from devices.", ["device"], registry=registry
        )
        self.writes = Counter(
            "edgetwin_mapper_writes_total",
            "Desired values written to devices.",
            ["device"],
            registry=registry,
        )
        self.errors = Counter(
            "edgetwin_mapper_errors_total",
            "Failed reads, writes and connections, by error kind.",
            ["device", "kind"],
            registry=registry,
        )
        self.polls = Counter(
            "edgetwin_mapper_polls_total",
            "Collect cycles run (one read of the due properties).",
            ["device"],
            registry=registry,
        )
        self.requests = Histogram(
            "edgetwin_mapper_request_seconds",
            "Requests sent to devices (count) and their latency.",
            ["device"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.state = EnumMetric(
            "edgetwin_mapper_device_state",
            "Device state.",
            ["device"],
            states=list(DEVICE_STATES),
            registry=registry,
        )

        self._error_kinds: dict[str, set[str]] = {}

    def error(self, device: str, error: MapperError) -> None:
        """Count one error of ``device``, labelled with its class (``DeviceResponseError``, ...)."""
        kind = type(error).__name__
        self._error_kinds.setdefault(device, set()).add(kind)
        self.errors.labels(device, kind).inc()

    def forget(self, device: str) -> None:
        """Drop a removed device's series so /metrics does not keep them forever."""
        for metric in (self.reads, self.writes, self.polls, self.requests, self.state):
            with contextlib.suppress(KeyError):  # never observed for this device
                metric.remove(device)
        for kind in self._error_kinds.pop(device, set()):
            self.errors.remove(device, kind)

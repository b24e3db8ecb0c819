"""The device twin's Prometheus metrics, one set per registry."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# A module restarted by its supervisor asks again for the same registry: hand back the metrics already
# registered there instead of registering them twice (prometheus_client refuses duplicates).
_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, TwinMetrics] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class TwinMetrics:
    """Counters and histograms of the twin: MQTT traffic, errors answered, store commits, queue depth."""

    messages_in: Counter
    messages_out: Counter
    errors: Counter
    commit_seconds: Histogram
    commit_batch_size: Histogram
    queue_depth: Gauge

    @classmethod
    def for_registry(cls, registry: CollectorRegistry | None) -> TwinMetrics:
        """The metrics registered on ``registry``; unregistered (still counting) ones when it is ``None``."""
        if registry is not None and registry in _BY_REGISTRY:
            return _BY_REGISTRY[registry]
        metrics = cls(
            messages_in=Counter(
                "edgetwin_twin_messages_in",
                "MQTT messages received by the device twin, by topic kind",
                ["kind"],
                registry=registry,
            ),
            messages_out=Counter(
                "edgetwin_twin_messages_out",
                "MQTT messages published by the device twin, by topic kind",
                ["kind"],
                registry=registry,
            ),
            errors=Counter(
                "edgetwin_twin_errors",
                "Error results answered by the device twin, by code",
                ["code"],
                registry=registry,
            ),
            commit_seconds=Histogram(
                "edgetwin_twin_store_commit_seconds",
                "Time to commit one batch of twin writes to SQLite",
                registry=registry,
                buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            ),
            commit_batch_size=Histogram(
                "edgetwin_twin_store_batch_size",
                "Writes committed together in one SQLite transaction",
                registry=registry,
                buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            ),
            queue_depth=Gauge(
                "edgetwin_twin_queue_depth",
                "Work waiting in the device twin: messages in device lanes, writes before the store",
                ["queue"],
                registry=registry,
            ),
        )
        if registry is not None:
            _BY_REGISTRY[registry] = metrics
        return metrics

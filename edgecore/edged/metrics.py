"""Edged's metrics: the container runtime client's (one set per registry) and the pod sync's."""

from __future__ import annotations

import weakref
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["EdgedMetrics", "RuntimeMetrics"]

# A module restarted by its supervisor builds a new client on the same registry: hand back the metrics
# already registered there (prometheus_client refuses to register a name twice).
_BY_REGISTRY: weakref.WeakKeyDictionary[CollectorRegistry, RuntimeMetrics] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class RuntimeMetrics:
    """CRI calls made and failed, by method (and gRPC status code for failures)."""

    calls: Counter
    errors: Counter

    @classmethod
    def for_registry(cls, registry: CollectorRegistry | None) -> RuntimeMetrics:
        """The metrics registered on ``registry``; unregistered (still counting) ones when it is ``None``."""
        if registry is not None and registry in _BY_REGISTRY:
            return _BY_REGISTRY[registry]
        metrics = cls(
            calls=Counter(
                "edgetwin_cri_calls",
                "CRI calls made to the container runtime, by method",
                ["method"],
                registry=registry,
            ),
            errors=Counter(
                "edgetwin_cri_errors",
                "CRI calls that failed, by method and gRPC status code",
                ["method", "code"],
                registry=registry,
            ),
        )
        if registry is not None:
            _BY_REGISTRY[registry] = metrics
        return metrics


@dataclass(frozen=True)
class EdgedMetrics:
    """Edged's pod sync: syncs by result, container restarts by cause, status reports by result, pods."""

    syncs: Counter
    restarts: Counter
    reports: Counter
    pods: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None) -> EdgedMetrics:
        """Register the metrics on ``registry`` (one Edged per registry; unregistered ones when ``None``)."""
        return cls(
            syncs=Counter(
                "edgetwin_edged_pod_syncs",
                "Pod syncs Edged ran, by result (ok, error)",
                ["result"],
                registry=registry,
            ),
            restarts=Counter(
                "edgetwin_edged_container_restarts",
                "Containers Edged restarted, by cause (exited, liveness, startup, image)",
                ["cause"],
                registry=registry,
            ),
            reports=Counter(
                "edgetwin_edged_reports",
                "Pod status and delete messages handed to the cloud link, by kind and result (sent, failed)",
                ["kind", "result"],
                registry=registry,
            ),
            pods=Gauge("edgetwin_edged_pods", "Pods Edged is running for this node", registry=registry),
        )

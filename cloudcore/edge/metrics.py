"""The EdgeController's Prometheus metrics, registered on the registry the daemon passes in."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

__all__ = ["REFUSAL_REASONS", "EdgeControllerMetrics"]

#: Why a message from an edge node is refused (acknowledged, not acted on).
REFUSAL_REASONS = ("other_node", "invalid", "unsupported", "stale", "not_terminating")


@dataclass(frozen=True)
class EdgeControllerMetrics:
    """Messages to edges, status patches and pod deletions from them, refusals, relists, errors."""

    messages_sent: Counter
    status_patches: Counter
    pods_deleted: Counter
    refused_messages: Counter
    refused_pods: Counter
    relists: Counter
    errors: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None) -> EdgeControllerMetrics:
        """Register the metrics on ``registry`` (unregistered ones when it is ``None``)."""
        metrics = cls(
            messages_sent=Counter(
                "edgetwin_edgecontroller_messages_sent",
                "Messages the EdgeController handed to the cloud link, by resource type and operation",
                ["type", "operation"],
                registry=registry,
            ),
            status_patches=Counter(
                "edgetwin_edgecontroller_pod_status_patches",
                "Pod status reports from edge nodes patched into the Kubernetes API",
                registry=registry,
            ),
            pods_deleted=Counter(
                "edgetwin_edgecontroller_pods_deleted",
                "Pods deleted from the API after their edge node finished a graceful deletion",
                registry=registry,
            ),
            refused_messages=Counter(
                "edgetwin_edgecontroller_refused_messages",
                "Messages from edge nodes refused, by reason (" + ", ".join(REFUSAL_REASONS) + ")",
                ["reason"],
                registry=registry,
            ),
            refused_pods=Counter(
                "edgetwin_edgecontroller_refused_pods",
                "Pods bound to a tainted edge node without the toleration (not sent to the node)",
                registry=registry,
            ),
            relists=Counter(
                "edgetwin_edgecontroller_relists",
                "Lists of a resource after its watch expired (410 Gone) or failed, by resource",
                ["resource"],
                registry=registry,
            ),
            errors=Counter(
                "edgetwin_edgecontroller_errors",
                "Errors of the EdgeController, by kind (watch, status, delete, admission, send)",
                ["kind"],
                registry=registry,
            ),
        )
        for reason in REFUSAL_REASONS:
            metrics.refused_messages.labels(reason)
        for kind in ("watch", "status", "delete", "admission", "send"):
            metrics.errors.labels(kind)
        return metrics

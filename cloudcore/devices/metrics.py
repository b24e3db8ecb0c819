"""The DeviceController's Prometheus metrics, registered on the registry the daemon passes in."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

__all__ = ["DeviceControllerMetrics"]


@dataclass(frozen=True)
class DeviceControllerMetrics:
    """Messages to edges, reports from them, status patches (sent, conflicts) and errors by kind."""

    messages_sent: Counter
    reports_received: Counter
    status_patches: Counter
    status_conflicts: Counter
    invalid_devices: Counter
    relists: Counter
    errors: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None) -> DeviceControllerMetrics:
        """Register the metrics on ``registry`` (unregistered ones when it is ``None``)."""
        return cls(
            messages_sent=Counter(
                "edgetwin_devicecontroller_messages_sent",
                "Messages the DeviceController handed to the cloud link, by resource type",
                ["type"],
                registry=registry,
            ),
            reports_received=Counter(
                "edgetwin_devicecontroller_reports_received",
                "Device messages received from edge nodes, by kind (twin, state)",
                ["kind"],
                registry=registry,
            ),
            status_patches=Counter(
                "edgetwin_devicecontroller_status_patches",
                "Merge patches of Device status sent to the Kubernetes API (after coalescing)",
                registry=registry,
            ),
            status_conflicts=Counter(
                "edgetwin_devicecontroller_status_conflicts",
                "Device status patches refused with 409 Conflict (re-read and retried)",
                registry=registry,
            ),
            invalid_devices=Counter(
                "edgetwin_devicecontroller_invalid_devices",
                "Device changes refused by validation (not sent to the edge), by reason",
                ["reason"],
                registry=registry,
            ),
            relists=Counter(
                "edgetwin_devicecontroller_relists",
                "Lists of a resource after a watch expired (410 Gone), by resource",
                ["resource"],
                registry=registry,
            ),
            errors=Counter(
                "edgetwin_devicecontroller_errors",
                "Errors of the DeviceController, by kind (watch, status, event, message, send)",
                ["kind"],
                registry=registry,
            ),
        )

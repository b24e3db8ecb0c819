"""Prometheus metrics of the cloud link, registered once per registry and labelled by side (cloud, edge).

CloudHub and EdgeHub may run in one process with one registry (the demo, tests): both sides share the
families and tell themselves apart by the ``side`` label.
"""

from __future__ import annotations

import weakref
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["LinkMetrics", "Side"]

Side = Literal["cloud", "edge"]


class _Families:
    def __init__(self, registry: CollectorRegistry) -> None:
        side = ["side"]
        self.messages = Counter(
            "cloudsync_messages",
            "Messages of the cloud link by side and direction (sent, received), acks and keepalives too.",
            ["side", "direction"],
            registry=registry,
        )
        self.frames_invalid = Counter(
            "cloudsync_frames_invalid",
            "Frames that were not valid messages, dropped.",
            side,
            registry=registry,
        )
        self.acks_pending = Gauge(
            "cloudsync_acks_pending",
            "Messages waiting for an acknowledgement (cloud: object messages; edge: the outbox).",
            side,
            registry=registry,
        )
        self.resends = Counter(
            "cloudsync_resends",
            "Messages sent again after an ack timeout or a reconnect.",
            side,
            registry=registry,
        )
        self.skipped = Counter(
            "cloudsync_skipped",
            "Object messages not sent or not applied again: their version was not newer than the known one.",
            side,
            registry=registry,
        )
        self.duplicates = Counter(
            "cloudsync_duplicates",
            "Messages received again (same msg_id) and acknowledged without handling them twice.",
            side,
            registry=registry,
        )
        self.handler_errors = Counter(
            "cloudsync_handler_errors",
            "Messages the receiving module failed to handle (not acknowledged: sent again later).",
            side,
            registry=registry,
        )
        self.dropped = Counter(
            "cloudsync_dropped",
            "Best-effort messages (no resourceVersion) dropped because the node was not connected.",
            side,
            registry=registry,
        )
        self.keepalives = Counter(
            "cloudsync_keepalives", "Keepalives (cloud: received, edge: sent).", side, registry=registry
        )
        self.connected_nodes = Gauge(
            "cloudsync_connected_nodes", "Edge nodes with a live CloudHub session.", registry=registry
        )
        self.refused = Counter(
            "cloudsync_connections_refused",
            "CloudHub handshakes refused, by reason.",
            ["reason"],
            registry=registry,
        )
        self.connects = Counter(
            "cloudsync_connects",
            "Sessions established (edge: connects and reconnects).",
            side,
            registry=registry,
        )


_FAMILIES: weakref.WeakKeyDictionary[CollectorRegistry, _Families] = weakref.WeakKeyDictionary()


class LinkMetrics:
    """The metrics of one side of the link; without a registry they go to a private one (benchmarks)."""

    def __init__(self, registry: CollectorRegistry | None, side: Side) -> None:
        registry = registry if registry is not None else CollectorRegistry()
        families = _FAMILIES.get(registry)
        if families is None:
            families = _FAMILIES[registry] = _Families(registry)
        self.sent = families.messages.labels(side, "sent")
        self.received = families.messages.labels(side, "received")
        self.frames_invalid = families.frames_invalid.labels(side)
        self.acks_pending = families.acks_pending.labels(side)
        self.resends = families.resends.labels(side)
        self.skipped = families.skipped.labels(side)
        self.duplicates = families.duplicates.labels(side)
        self.handler_errors = families.handler_errors.labels(side)
        self.dropped = families.dropped.labels(side)
        self.keepalives = families.keepalives.labels(side)
        self.connects = families.connects.labels(side)
        self.connected_nodes = families.connected_nodes
        self._refused = families.refused

    def refused(self, reason: str) -> None:
        """Count one refused handshake."""
        self._refused.labels(reason).inc()

"""The body of a core/v1 Event about an API object as ``kubectl get events`` shows it."""

from __future__ import annotations

import time
from typing import Any, Literal

from cloudcore.kube import kube_time

__all__ = ["event_body"]


def event_body(
    obj: dict[str, Any],
    *,
    event_type: Literal["Normal", "Warning"],
    reason: str,
    message: str,
    component: str,
    kind: str,
    api_version: str,
) -> dict[str, Any]:
    """An Event about ``obj`` (a namespaced object; ``kind``/``api_version`` when the object does not say)."""
    metadata = obj["metadata"]
    now = kube_time(time.time())
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{metadata['name']}.", "namespace": metadata["namespace"]},
        "involvedObject": {
            "apiVersion": obj.get("apiVersion") or api_version,
            "kind": obj.get("kind") or kind,
            "name": metadata["name"],
            "namespace": metadata["namespace"],
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
        },
        "reason": reason,
        "message": message,
        "type": event_type,
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }

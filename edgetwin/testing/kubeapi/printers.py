"""The columns ``kubectl get`` shows for the built-in kinds edgetwin uses: namespaces, pods and nodes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgetwin.testing.kubeapi.tables import AGE_COLUMN, PrinterColumn

_ROLE_PREFIX = "node-role.kubernetes.io/"


def _pod_ready(pod: Mapping[str, Any]) -> str:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    ready = sum(1 for status in statuses if status.get("ready"))
    return f"{ready}/{len(pod.get('spec', {}).get('containers') or [])}"


def _pod_status(pod: Mapping[str, Any]) -> str:
    """The phase, unless a container tells more (ContainerCreating, CrashLoopBackOff...) or it is going."""
    if pod["metadata"].get("deletionTimestamp"):
        return "Terminating"
    status = pod.get("status", {})
    shown = str(status.get("reason") or status.get("phase") or "Unknown")
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        reason = (state.get("waiting") or {}).get("reason") or (state.get("terminated") or {}).get("reason")
        if reason:
            shown = str(reason)
    return shown


def _pod_restarts(pod: Mapping[str, Any]) -> int:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return sum(int(status.get("restartCount", 0)) for status in statuses)


def _pod_ip(pod: Mapping[str, Any]) -> str:
    return str(pod.get("status", {}).get("podIP") or "<none>")


def _pod_node(pod: Mapping[str, Any]) -> str:
    return str(pod.get("spec", {}).get("nodeName") or "<none>")


def _node_status(node: Mapping[str, Any]) -> str:
    conditions = node.get("status", {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    shown = "Ready" if ready else "NotReady"
    return shown + (",SchedulingDisabled" if node.get("spec", {}).get("unschedulable") else "")


def _node_roles(node: Mapping[str, Any]) -> str:
    labels = node["metadata"].get("labels") or {}
    roles = sorted(key.removeprefix(_ROLE_PREFIX) for key in labels if key.startswith(_ROLE_PREFIX))
    return ",".join(roles) or "<none>"


def _computed(name: str, description: str, compute: Any, type_: str = "string") -> PrinterColumn:
    return PrinterColumn(name, type_, "", description, compute=compute)


BUILTIN_COLUMNS: dict[tuple[str, str, str], list[PrinterColumn]] = {
    ("", "v1", "namespaces"): [
        PrinterColumn("Status", "string", ".status.phase", "The status of the namespace"),
        AGE_COLUMN,
    ],
    ("", "v1", "pods"): [
        _computed("Ready", "The aggregate readiness state of this pod for accepting traffic.", _pod_ready),
        _computed("Status", "The aggregate status of the containers in this pod.", _pod_status),
        _computed("Restarts", "The number of times the containers have restarted.", _pod_restarts, "integer"),
        AGE_COLUMN,
        PrinterColumn("IP", "string", "", "The IP address of the pod.", priority=1, compute=_pod_ip),
        PrinterColumn("Node", "string", "", "The node the pod is bound to.", priority=1, compute=_pod_node),
    ],
    ("", "v1", "nodes"): [
        _computed("Status", "The status of the node", _node_status),
        _computed("Roles", "The roles of the node", _node_roles),
        AGE_COLUMN,
        PrinterColumn(
            "Version", "string", ".status.nodeInfo.kubeletVersion", "Kubelet Version reported by the node."
        ),
    ],
}
"""Printer columns of built-in kinds by (group, version, plural); the others show their age only."""

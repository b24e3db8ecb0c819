"""Node Leases (``coordination.k8s.io/v1``, namespace ``kube-node-lease``): a node's cheap heartbeat.

A kubelet renews ``kube-node-lease/<node>`` every quarter of its duration; the node lifecycle controller
and tools read ``spec.renewTime``. For an edge node cloudcore renews it on the node's behalf whenever the
node's keepalives arrive, with the node as holder and the Node as owner (deleting the Node deletes it).
"""

from __future__ import annotations

import time
from typing import Any, Final

from kubernetes import client as k8s

from cloudcore.errors import KubeConflictError, KubeNotFoundError
from cloudcore.kube import MERGE_PATCH, kube_micro_time, request

__all__ = ["NODE_LEASE_NAMESPACE", "renew_node_lease"]

NODE_LEASE_NAMESPACE: Final = "kube-node-lease"
_LEASES: Final = f"/apis/coordination.k8s.io/v1/namespaces/{NODE_LEASE_NAMESPACE}/leases"


async def renew_node_lease(
    api: k8s.ApiClient, node: str, *, duration: int, node_uid: str = "", now: float | None = None
) -> dict[str, Any]:
    """Set ``renewTime`` of ``node``'s Lease to ``now`` (creating the Lease if needed); the Lease.

    ``node_uid``, when known, makes the Node the Lease's owner, as the kubelet does.
    """
    spec = {
        "holderIdentity": node,
        "leaseDurationSeconds": duration,
        "renewTime": kube_micro_time(time.time() if now is None else now),
    }
    operation = f"renew lease {NODE_LEASE_NAMESPACE}/{node}"
    try:
        return await _patch(api, node, spec, operation)
    except KubeNotFoundError:
        pass
    metadata: dict[str, Any] = {"name": node, "namespace": NODE_LEASE_NAMESPACE}
    if node_uid:
        metadata["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}]
    body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}
    try:
        return await request(api, "POST", _LEASES, body=body, operation=operation)
    except KubeConflictError:  # created meanwhile (another cloudcore replica): renew that one
        return await _patch(api, node, spec, operation)


async def _patch(api: k8s.ApiClient, node: str, spec: dict[str, Any], operation: str) -> dict[str, Any]:
    return await request(
        api, "PATCH", f"{_LEASES}/{node}", body={"spec": spec}, content_type=MERGE_PATCH, operation=operation
    )

"""The EdgeController: Pods bound to edge nodes and the objects they need <-> the nodes, pod status back."""

from cloudcore.edge.admission import NOT_TOLERATED
from cloudcore.edge.controller import EdgeController, Send
from cloudcore.edge.messages import SOURCE, PodStatusReport, is_pod_resource, read_pod_status
from cloudcore.edge.pods import PodReferences, edge_taint, pod_references, tolerates

__all__ = [
    "NOT_TOLERATED",
    "SOURCE",
    "EdgeController",
    "PodReferences",
    "PodStatusReport",
    "Send",
    "edge_taint",
    "is_pod_resource",
    "pod_references",
    "read_pod_status",
    "tolerates",
]

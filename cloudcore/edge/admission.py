"""edgetwin's admission of Pods bound to edge nodes: what users see when a Pod may not run on its node.

edgetwin does not schedule Pods. A Pod bound to an edge node tainted
``node-role.kubernetes.io/edge:NoSchedule`` that does not tolerate the taint is not sent to the node
(:mod:`cloudcore.edge.controller` decides that); :class:`RefusalReporter` says so on the Pod, once per Pod:
a ``PodScheduled=False`` condition with reason ``EdgeTaintNotTolerated`` and a Warning Event
(``kubectl describe pod`` shows both).
"""

from __future__ import annotations

import logging
import time
from typing import Final

from kubernetes.client import ApiClient

from cloudcore.edge.metrics import EdgeControllerMetrics
from cloudcore.edge.pods import EDGE_TAINT_EFFECT
from cloudcore.errors import KubeApiError, KubeUnavailableError
from cloudcore.events import event_body
from cloudcore.kube import STRATEGIC_MERGE_PATCH, kube_time, request
from cloudcore.nodes import EDGE_ROLE_LABEL
from cloudcore.watch import JsonObject

__all__ = ["NOT_TOLERATED", "RefusalReporter"]

log = logging.getLogger(__name__)

#: Reason of the ``PodScheduled=False`` condition and Warning Event of a Pod refused by admission.
NOT_TOLERATED: Final = "EdgeTaintNotTolerated"


class RefusalReporter:
    """Reports Pods refused by admission on the Pod itself, each Pod (uid) once."""

    def __init__(self, api_client: ApiClient, metrics: EdgeControllerMetrics, component: str) -> None:
        """Write through ``api_client``; Events name ``component`` as their source."""
        self._api = api_client
        self._metrics = metrics
        self._component = component
        self._reported: dict[str, str] = {}  # "<ns>/<name>" -> uid

    def forget(self, key: str) -> None:
        """The Pod ``<ns>/<name>`` is gone: a new Pod of that name is reported again."""
        self._reported.pop(key, None)

    async def report(self, refused: list[tuple[str, JsonObject]]) -> None:
        """Report each ``(node, pod)`` not reported yet; API failures are logged and counted."""
        for node, pod in refused:
            metadata = pod["metadata"]
            key, uid = f"{metadata['namespace']}/{metadata['name']}", str(metadata.get("uid") or "")
            if self._reported.get(key) == uid:
                continue
            self._reported[key] = uid
            self._metrics.refused_pods.inc()
            message = (
                f"the pod does not tolerate the taint {EDGE_ROLE_LABEL}:{EDGE_TAINT_EFFECT} of edge node "
                f"{node}; add the toleration to run it there"
            )
            log.warning("pod not sent to its edge node: %s", message, extra={"node": node, "pod": key})
            try:
                if not _marked(pod):
                    await self._mark_unscheduled(pod, message)
                await self._warn(pod, message)
            except (KubeApiError, KubeUnavailableError) as exc:
                self._metrics.errors.labels("admission").inc()
                log.warning("cannot report a refused pod: %s", exc, extra={"node": node, "pod": key})

    async def _mark_unscheduled(self, pod: JsonObject, message: str) -> None:
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        condition = {
            "type": "PodScheduled",
            "status": "False",
            "reason": NOT_TOLERATED,
            "message": message,
            "lastTransitionTime": kube_time(time.time()),
        }
        # Strategic merge: conditions merge by type, other writers' conditions stay. The uid makes sure a
        # new Pod of the same name is not marked for the old one.
        await request(
            self._api,
            "PATCH",
            f"/api/v1/namespaces/{namespace}/pods/{name}/status",
            body={"metadata": {"uid": pod["metadata"].get("uid")}, "status": {"conditions": [condition]}},
            content_type=STRATEGIC_MERGE_PATCH,
            operation=f"mark pod {namespace}/{name} unschedulable",
        )

    async def _warn(self, pod: JsonObject, message: str) -> None:
        metadata = pod["metadata"]
        event = event_body(
            pod,
            event_type="Warning",
            reason=NOT_TOLERATED,
            message=message,
            component=self._component,
            kind="Pod",
            api_version="v1",
        )
        namespace = metadata["namespace"]
        path = f"/api/v1/namespaces/{namespace}/events"
        await request(self._api, "POST", path, body=event, operation=f"create event in {namespace}")


def _marked(pod: JsonObject) -> bool:
    """Whether the Pod carries the refusal condition already (as after a controller restart)."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == NOT_TOLERATED:
            return True
    return False

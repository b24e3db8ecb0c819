"""The edge nodes' lifecycle in the Kubernetes API: registration, Ready / NotReady, Lease.

An edge node has no kubelet talking to the apiserver: its edgecore announces the node over the cloud link
(an ``insert`` of ``<ns>/node/<node>`` carrying a v1 Node, see ``edgecore.nodeinfo``) and then sends
keepalives. :class:`NodeController` turns those into what a kubelet and the node lifecycle controller
would write:

- the Node, created from the announcement with the edge role labels (``node-role.kubernetes.io/edge``
  and ``/agent``), the announced taints (on creation only, like the kubelet's ``registerWithTaints``),
  addresses, capacity / allocatable and ``nodeInfo``; a later announcement updates labels and status;
- the Ready condition through the status subresource: ``True`` / ``KubeletReady`` on connect and on
  keepalives (written again at most every ``status_interval`` seconds while nothing changes), and
  ``Unknown`` / ``NodeStatusUnknown`` once no keepalive came for ``grace_period`` seconds (kubectl shows
  NotReady), back to ``True`` on the next keepalive;
- the Lease ``kube-node-lease/<node>``, renewed from keepalives every quarter of its duration.

A node only ever touches its own Node: a message naming another node is refused (logged and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from kubernetes import client as k8s
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloudcore.errors import CloudCoreError, KubeApiError, KubeConflictError, KubeNotFoundError
from cloudcore.kube import STRATEGIC_MERGE_PATCH, kube_time, list_all, request
from cloudcore.lease import renew_node_lease
from cloudsync import Message, MessageFormatError, ObjectRef, Operation, ResourceType

__all__ = [
    "AGENT_ROLE_LABEL",
    "EDGE_ROLE_LABEL",
    "NOT_READY_MESSAGE",
    "NodeController",
]

log = logging.getLogger(__name__)

EDGE_ROLE_LABEL: Final = "node-role.kubernetes.io/edge"
AGENT_ROLE_LABEL: Final = "node-role.kubernetes.io/agent"
READY_MESSAGE: Final = "edgecore is posting ready status"
NOT_READY_MESSAGE: Final = "edgecore stopped posting node status"
# Labels a node may not set on itself (the NodeRestriction admission plugin's reserved prefix).
_RESTRICTED_LABEL_PREFIX: Final = "node-restriction.kubernetes.io/"
_NODES: Final = "/api/v1/nodes"
# The API answers for a Node it will never accept, whatever the retry: refused, not retried.
_INVALID_STATUSES: Final = frozenset({400, 422})


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _Taint(_Wire):
    key: str = Field(min_length=1, max_length=316)
    value: str = ""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class _Address(_Wire):
    type: str = Field(min_length=1)
    address: str = Field(min_length=1)


class _Metadata(_Wire):
    name: str = ""
    labels: dict[str, str] = Field(default_factory=dict)


class _Spec(_Wire):
    taints: list[_Taint] = Field(default_factory=list)


class _Status(_Wire):
    addresses: list[_Address] = Field(default_factory=list)
    capacity: dict[str, str] = Field(default_factory=dict)
    allocatable: dict[str, str] = Field(default_factory=dict)
    node_info: dict[str, str] = Field(default_factory=dict, alias="nodeInfo")


class _Announcement(_Wire):
    """The parts of an announced v1 Node that an edge node may set; anything else is ignored."""

    metadata: _Metadata = Field(default_factory=_Metadata)
    spec: _Spec = Field(default_factory=_Spec)
    status: _Status = Field(default_factory=_Status)


@dataclass
class _NodeState:
    """What the controller knows of one node; times from ``time.monotonic`` unless named ``wall``."""

    last_heartbeat: float
    heartbeat_wall: float
    exists: bool | None = None  # None: not asked yet
    ready: bool | None = None  # the Ready condition as last written (True, or False for Unknown)
    transition_wall: str = ""  # its lastTransitionTime
    uid: str = ""
    status_written: float = -math.inf
    lease_renewed: float = -math.inf
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class NodeController:
    """Edge nodes' Node objects, Ready condition and Leases, from what the cloud link delivers.

    A supervised module (``start`` / ``wait`` / ``stop``) and the node-lifecycle part of the cloud link's
    handler (``node_connected`` / ``node_disconnected`` / ``received``). ``grace_period``: seconds without
    a keepalive before a node turns NotReady (the node lifecycle controller's
    ``node-monitor-grace-period``); ``lease_duration``: the Lease's ``leaseDurationSeconds``, renewed every
    quarter of it; ``status_interval``: the longest time between two Ready writes while nothing changes;
    ``monitor_period``: how often silent nodes are looked for (default a quarter of the grace period, at
    most 5 s); ``kubelet_port``: cloudcore's stream port, if any, written on registration as the Node's
    ``daemonEndpoints.kubeletEndpoint.Port`` (where the apiserver sends ``kubectl logs`` / ``exec``).
    """

    name = "nodecontroller"

    def __init__(
        self,
        api: k8s.ApiClient,
        *,
        grace_period: float = 40.0,
        lease_duration: int = 40,
        status_interval: float = 10.0,
        monitor_period: float | None = None,
        registry: CollectorRegistry | None = None,
        kubelet_port: Callable[[], int | None] | None = None,
    ) -> None:
        if grace_period <= 0 or lease_duration <= 0 or status_interval <= 0:
            raise ValueError("grace_period, lease_duration and status_interval must be positive")
        self._api = api
        self._grace = grace_period
        self._lease_duration = lease_duration
        self._lease_interval = lease_duration / 4
        self._status_interval = status_interval
        self._monitor_period = monitor_period or min(5.0, grace_period / 4)
        self._kubelet_port = kubelet_port
        self._nodes: dict[str, _NodeState] = {}
        self._monitor: asyncio.Task[None] | None = None
        registry = registry if registry is not None else CollectorRegistry()
        nodes = Gauge(
            "edgetwin_nodecontroller_nodes",
            "Edge nodes known to cloudcore by their Ready condition (ready, unknown: NotReady)",
            ["condition"],
            registry=registry,
        )
        nodes.labels(condition="ready").set_function(lambda: self._count(ready=True))
        nodes.labels(condition="unknown").set_function(lambda: self._count(ready=False))
        self._status_writes = Counter(
            "edgetwin_nodecontroller_status_updates",
            "Ready condition writes, by condition status (True, Unknown)",
            ["status"],
            registry=registry,
        )
        self._lease_renewals = Counter(
            "edgetwin_nodecontroller_lease_renewals", "Node Lease renewals", registry=registry
        )
        self._refused = Counter(
            "edgetwin_nodecontroller_refused_messages",
            "Messages from edge nodes refused, by reason (other_node, invalid, unsupported)",
            ["reason"],
            registry=registry,
        )
        self._errors = Counter(
            "edgetwin_nodecontroller_api_errors",
            "Failed Kubernetes API calls of the node controller, by action",
            ["action"],
            registry=registry,
        )
        for status in ("True", "Unknown"):
            self._status_writes.labels(status=status)
        for reason in ("other_node", "invalid", "unsupported"):
            self._refused.labels(reason=reason)
        for action in ("register", "status", "lease", "list"):
            self._errors.labels(action=action)

    # -- module ------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Learn the edge nodes already registered, then watch for silent ones.

        Nodes Ready in the API count as just heard from: they turn NotReady one grace period after this
        start unless their edgecore reconnects (as after a cloudcore restart).
        """
        if self._monitor is not None and not self._monitor.done():
            return
        try:
            nodes = await list_all(
                self._api, _NODES, query=[("labelSelector", EDGE_ROLE_LABEL)], operation="list edge nodes"
            )
        except CloudCoreError:
            self._errors.labels(action="list").inc()
            raise
        mono, wall = time.monotonic(), time.time()
        for node in nodes:
            name = node["metadata"]["name"]
            state = self._nodes.setdefault(name, _NodeState(mono, wall))
            state.exists, state.uid = True, node["metadata"].get("uid", "")
            ready = _ready_condition(node)
            if ready is not None:
                state.ready = ready.get("status") == "True"
                state.transition_wall = ready.get("lastTransitionTime") or ""
        self._monitor = asyncio.create_task(self._watch_silent(), name="nodecontroller-monitor")
        log.info("node controller started", extra={"edge_nodes": len(nodes), "grace_period": self._grace})

    async def wait(self) -> None:
        """Return (or raise) when the monitor loop has ended."""
        if self._monitor is not None:
            await self._monitor

    async def stop(self) -> None:
        """Stop watching for silent nodes; Nodes keep their condition (another cloudcore may take over)."""
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
            self._monitor = None

    def ready_nodes(self) -> frozenset[str]:
        """The nodes whose Ready condition cloudcore last wrote as True."""
        return frozenset(name for name, state in self._nodes.items() if state.ready is True)

    # -- cloud link handler ------------------------------------------------------------------------------

    async def node_connected(self, node: str) -> None:
        """The node's link is up: a heartbeat (Ready, if its Node exists)."""
        log.info("edge node connected", extra={"node": node})
        await self._heartbeat(node)

    async def node_disconnected(self, node: str) -> None:
        """The node's link is down: nothing yet, it turns NotReady only after the grace period."""
        log.info("edge node disconnected", extra={"node": node})

    async def received(self, node: str, message: Message) -> None:
        """One message from ``node``: a keepalive, or an announcement of its own Node.

        Raises a :class:`~cloudcore.errors.CloudCoreError` when the API is unavailable during a
        registration, so that the link does not acknowledge it and the edge sends it again; messages that
        can never be accepted are refused (logged, counted) and not raised.
        """
        if message.operation is Operation.KEEPALIVE:
            await self._heartbeat(node)
            return
        try:
            ref = ObjectRef.parse(message.resource)
        except MessageFormatError:
            ref = None
        if ref is None or ref.type != ResourceType.NODE:
            self._refuse(node, message, "unsupported", "not a node resource")
        elif ref.name != node:
            self._refuse(node, message, "other_node", f"names node {ref.name!r}")
        elif message.operation not in (Operation.INSERT, Operation.UPDATE):
            self._refuse(node, message, "unsupported", f"operation {message.operation} on a Node")
        else:
            await self._register(node, message)

    # -- registration ------------------------------------------------------------------------------------

    async def _register(self, node: str, message: Message) -> None:
        try:
            announced = _Announcement.model_validate(message.content)
        except ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "content"
            self._refuse(node, message, "invalid", f"{where}: {first['msg']}")
            return
        if announced.metadata.name not in ("", node):
            self._refuse(node, message, "other_node", f"content names node {announced.metadata.name!r}")
            return
        labels = {
            key: value
            for key, value in announced.metadata.labels.items()
            if not key.startswith(_RESTRICTED_LABEL_PREFIX)
        } | {EDGE_ROLE_LABEL: "", AGENT_ROLE_LABEL: ""}
        state = self._touch(node)
        async with state.lock:
            try:
                await self._create_or_label(node, state, labels, announced)
                status = announced.status.model_dump(by_alias=True, exclude_defaults=True)
                port = self._kubelet_port() if self._kubelet_port is not None else None
                if port:  # the apiserver's logs / exec calls for the node go to cloudcore's stream port
                    status["daemonEndpoints"] = {"kubeletEndpoint": {"Port": port}}
                await self._write_ready(node, state, True, extra=status)
            except KubeApiError as exc:
                if exc.status not in _INVALID_STATUSES:
                    self._errors.labels(action="register").inc()
                    raise
                self._refuse(node, message, "invalid", f"the API refused the Node: {exc.message}")
                return
            except CloudCoreError:
                self._errors.labels(action="register").inc()
                raise
            await self._renew_lease(node, state)

    async def _create_or_label(
        self, node: str, state: _NodeState, labels: dict[str, str], announced: _Announcement
    ) -> None:
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": node, "labels": labels},
            "spec": {"taints": [taint.model_dump() for taint in announced.spec.taints]},
        }
        try:
            answer = await request(self._api, "POST", _NODES, body=body, operation=f"create node {node}")
            log.info("edge node registered", extra={"node": node, "labels": labels})
        except KubeConflictError:
            answer = await request(
                self._api,
                "PATCH",
                f"{_NODES}/{node}",
                body={"metadata": {"labels": labels}},
                content_type=STRATEGIC_MERGE_PATCH,
                operation=f"label node {node}",
            )
            log.info("edge node announced again", extra={"node": node})
        state.exists, state.uid = True, answer["metadata"].get("uid", "")

    # -- heartbeats and the Ready condition --------------------------------------------------------------

    def _touch(self, node: str) -> _NodeState:
        mono, wall = time.monotonic(), time.time()
        state = self._nodes.get(node)
        if state is None:
            state = self._nodes[node] = _NodeState(mono, wall)
        state.last_heartbeat, state.heartbeat_wall = mono, wall
        return state

    async def _heartbeat(self, node: str) -> None:
        state = self._touch(node)
        async with state.lock:
            now = time.monotonic()
            due = now - state.status_written >= self._status_interval
            # Unknown nodes are asked once; a node known to be absent only every status interval.
            if due or (state.ready is not True and state.exists is not False):
                try:
                    await self._write_ready(node, state, True)
                except CloudCoreError as exc:
                    self._status_failed(node, state, exc)
                    return
            if state.exists and now - state.lease_renewed >= self._lease_interval:
                await self._renew_lease(node, state)

    async def _write_ready(
        self, node: str, state: _NodeState, ready: bool, *, extra: dict[str, Any] | None = None
    ) -> None:
        """Patch the Ready condition (and ``extra`` status fields) through the status subresource."""
        state.status_written = time.monotonic()
        transition = state.transition_wall
        if state.ready is not ready or not transition:
            transition = kube_time(time.time())
        condition = {
            "type": "Ready",
            "status": "True" if ready else "Unknown",
            "reason": "KubeletReady" if ready else "NodeStatusUnknown",
            "message": READY_MESSAGE if ready else NOT_READY_MESSAGE,
            "lastHeartbeatTime": kube_time(state.heartbeat_wall),
            "lastTransitionTime": transition,
        }
        # Strategic merge: conditions merge by type, so other writers' conditions stay.
        answer = await request(
            self._api,
            "PATCH",
            f"{_NODES}/{node}/status",
            body={"status": {**(extra or {}), "conditions": [condition]}},
            content_type=STRATEGIC_MERGE_PATCH,
            operation=f"update status of node {node}",
        )
        if state.ready is not ready:
            log.info(
                "edge node %s is %s",
                node,
                "Ready" if ready else "NotReady",
                extra={"node": node, "ready": ready, "reason": condition["reason"]},
            )
        state.exists, state.uid = True, answer["metadata"].get("uid", state.uid)
        state.ready, state.transition_wall = ready, transition
        self._status_writes.labels(status=condition["status"]).inc()

    def _status_failed(self, node: str, state: _NodeState, exc: CloudCoreError) -> None:
        if isinstance(exc, KubeNotFoundError):
            # Not registered (yet), or deleted by an administrator: the next announcement creates it.
            state.exists, state.ready = False, None
            log.debug("no Node for edge node %s", node, extra={"node": node})
            return
        self._errors.labels(action="status").inc()
        log.warning("cannot update edge node %s: %s", node, exc, extra={"node": node, "error": str(exc)})

    async def _renew_lease(self, node: str, state: _NodeState) -> None:
        try:
            await renew_node_lease(self._api, node, duration=self._lease_duration, node_uid=state.uid)
        except CloudCoreError as exc:
            self._errors.labels(action="lease").inc()
            log.warning(
                "cannot renew the lease of %s: %s", node, exc, extra={"node": node, "error": str(exc)}
            )
            return
        state.lease_renewed = time.monotonic()
        self._lease_renewals.inc()

    async def _watch_silent(self) -> None:
        while True:
            await asyncio.sleep(self._monitor_period)
            for node, state in list(self._nodes.items()):
                if state.ready is True and self._silent(state):
                    async with state.lock:
                        if state.ready is True and self._silent(state):  # no keepalive came meanwhile
                            await self._mark_not_ready(node, state)

    def _silent(self, state: _NodeState) -> bool:
        return time.monotonic() - state.last_heartbeat > self._grace

    async def _mark_not_ready(self, node: str, state: _NodeState) -> None:
        try:
            await self._write_ready(node, state, False)
        except CloudCoreError as exc:
            self._status_failed(node, state, exc)  # still Ready here: tried again next period

    # -- helpers -----------------------------------------------------------------------------------------

    def _refuse(self, node: str, message: Message, reason: str, detail: str) -> None:
        self._refused.labels(reason=reason).inc()
        log.warning(
            "refused a message from edge node %s: %s",
            node,
            detail,
            extra={
                "node": node,
                "msg_id": message.msg_id,
                "resource": message.resource,
                "operation": str(message.operation),
                "reason": reason,
            },
        )

    def _count(self, *, ready: bool) -> int:
        return sum(1 for state in self._nodes.values() if state.ready is ready)


def _ready_condition(node: dict[str, Any]) -> dict[str, Any] | None:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return dict(condition)
    return None

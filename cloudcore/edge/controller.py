"""The EdgeController: Pods bound to edge nodes, and what they need, down to their node only (issue 10).

Downstream, it lists and watches the edge nodes (label ``node-role.kubernetes.io/edge``), the Pods bound to
a node (``fieldSelector=spec.nodeName!=``), and the ConfigMaps, Secrets, Services and Endpoints, resuming
each watch from its last resourceVersion and listing again after 410 Gone. After every change it works out
what each affected node must hold and sends the difference from what it already sent that node:

- the node's Pods (a Pod with ``deletionTimestamp`` is sent as an update: the edge stops it gracefully,
  then reports the delete, see below);
- the ConfigMaps and Secrets its Pods name (volumes, projected volumes, ``env.valueFrom``, ``envFrom``,
  ``imagePullSecrets``), and the Services and Endpoints of the namespaces its Pods run in (for EdgeMesh, as
  KubeEdge does). A node never receives another node's Pods, nor a Secret none of its Pods names; when the
  last Pod naming a Secret leaves the node, the node is told to delete it.

Only changes the edge acts on are sent (:func:`~cloudcore.edge.messages.fingerprint`): a Pod whose status
alone changed (the controller's own patches) is not echoed back. A Pod deleted and created again under the
same name while the controller was not watching arrives as an update with a new ``metadata.uid``.

Versions. Each message's ``resourceversion`` is newer than the previous one the controller sent for the
same resource to the same node, as the link requires: the object's own resourceVersion, or — for a
ConfigMap, Secret, Service or Endpoints a Pod brings or takes away — the Pod's when that is newer, and for a
delete the resourceVersion of the change that caused it. Watches of different types run independently, so
in the rare case where these are not newer, the previous version plus one is used. Kept in memory: a
stopped and started controller (as after a 410 Gone) sends only what changed; a new process sends every
node its objects again and the link skips what the node acknowledged.

Admission. edgetwin does not schedule Pods: one bound by a user or a scheduler (``spec.nodeName``) is
honoured, except that a Pod without a toleration of ``node-role.kubernetes.io/edge:NoSchedule`` is not sent
to an edge node carrying that taint. It gets a ``PodScheduled=False`` condition (reason
``EdgeTaintNotTolerated``) and a Warning Event instead, and is sent once the taint is gone. A Pod the node
already runs stays there (a NoSchedule taint does not evict).

Upstream, :meth:`EdgeController.received` takes ``<ns>/podstatus/<name>`` reports (content: see
:mod:`cloudcore.edge.messages`) and patches them into the Pod's status subresource, and ``delete`` of
``<ns>/pod/<name>`` once the edge has stopped a Pod being deleted: the Pod is then deleted with
``gracePeriodSeconds=0``, as a kubelet finishes a graceful deletion (likewise when a status report shows a
Pod being deleted whose containers have all ended). A node only touches Pods bound to it: anything else is
refused (logged, counted, acknowledged). A report about a Pod the API no longer has makes the controller
tell the node to delete it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from kubernetes.client import ApiClient
from prometheus_client import CollectorRegistry

from cloudcore.edge.admission import RefusalReporter
from cloudcore.edge.messages import (
    delete_message,
    fingerprint,
    identity,
    object_message,
    read_pod_status,
    resource_of,
)
from cloudcore.edge.metrics import EdgeControllerMetrics
from cloudcore.edge.pods import edge_taint, pod_references, tolerates
from cloudcore.errors import (
    KubeApiError,
    KubeConflictError,
    KubeNotFoundError,
    KubeUnavailableError,
    PodMessageError,
    WatchExpiredError,
)
from cloudcore.kube import MERGE_PATCH, request
from cloudcore.nodes import EDGE_ROLE_LABEL
from cloudcore.watch import JsonObject, watch
from cloudsync import Message, MessageFormatError, ObjectRef, Operation, ResourceType
from cloudsync.versions import is_newer
from eventbus import Backoff, BackoffPolicy

__all__ = ["EdgeController", "Send"]

log = logging.getLogger(__name__)

#: How the controller hands a message to a node (``CloudLink.send``): queues it and returns at once.
Send = Callable[[str, Message], Awaitable[None]]

_DEPENDENTS: Final = (
    ResourceType.CONFIGMAP,
    ResourceType.SECRET,
    ResourceType.SERVICE,
    ResourceType.ENDPOINTS,
)
_PER_NAMESPACE: Final = (ResourceType.SERVICE, ResourceType.ENDPOINTS)
_FINISHED_PHASES: Final = frozenset({"Succeeded", "Failed"})
# The API answers for a status it will never accept, whatever the retry: refused, not retried.
_INVALID_STATUSES: Final = frozenset({400, 422})


@dataclass(frozen=True)
class _Watched:
    """One collection the controller lists and watches."""

    type: ResourceType
    plural: str
    query: tuple[tuple[str, str], ...] = ()
    namespaced: bool = True


_NODES: Final = _Watched(ResourceType.NODE, "nodes", (("labelSelector", EDGE_ROLE_LABEL),), False)
_PODS: Final = _Watched(ResourceType.POD, "pods", (("fieldSelector", "spec.nodeName!="),))
# Nodes first, Pods last: a first sync then finds everything a Pod names.
_WATCHED: Final = (
    _NODES,
    _Watched(ResourceType.CONFIGMAP, "configmaps"),
    _Watched(ResourceType.SECRET, "secrets"),
    _Watched(ResourceType.SERVICE, "services"),
    _Watched(ResourceType.ENDPOINTS, "endpoints"),
    _PODS,
)


@dataclass
class _Sent:
    """What the controller last sent one node about one resource."""

    version: str  # the message's resourceversion
    object_rv: str | None  # the object's resourceVersion the node holds; None once told to delete it
    fingerprint: str
    identity: JsonObject


@dataclass
class _Want:
    """An object a node must hold, and the version a message about it should at least carry."""

    type: ResourceType
    obj: JsonObject
    version: str


class EdgeController:
    """Syncs Pods and what they need to their edge nodes through ``send``; edge pod reports to the API.

    ``api_client`` is a blocking ``kubernetes.client.ApiClient`` (the caller closes it after :meth:`stop`).
    ``watch_timeout`` is how long one watch request lasts before it is renewed (from the last
    resourceVersion); ``namespace`` limits Pods, ConfigMaps, Secrets, Services and Endpoints to one
    namespace (all by default; nodes are cluster-wide). A supervised module (``start`` / ``wait`` /
    ``stop``); :meth:`received` is the pod part of the cloud link's handler (see :func:`is_pod_resource`).
    """

    name = "edgecontroller"

    def __init__(
        self,
        api_client: ApiClient,
        send: Send,
        *,
        registry: CollectorRegistry | None = None,
        watch_timeout: int = 300,
        backoff: BackoffPolicy | None = None,
        namespace: str | None = None,
    ) -> None:
        """Wire the controller; nothing runs before :meth:`start`."""
        self._api = api_client
        self._send_to = send
        self._metrics = EdgeControllerMetrics.create(registry)
        self._watch_timeout = watch_timeout
        self._backoff_policy = backoff or BackoffPolicy(minimum=0.2, maximum=10.0)
        self._namespace = namespace
        self._nodes: dict[str, JsonObject] = {}
        self._pods: dict[str, JsonObject] = {}  # "<ns>/<name>" -> Pod
        self._node_pods: dict[str, set[str]] = {}
        self._objects: dict[ResourceType, dict[str, dict[str, JsonObject]]] = {t: {} for t in _DEPENDENTS}
        self._sent: dict[str, dict[str, _Sent]] = {}
        self._refusals = RefusalReporter(api_client, self._metrics, self.name)
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._synced = asyncio.Event()

    # --- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """List every watched collection, send each edge node what it lacks, then watch them all."""
        if self._tasks:
            return
        versions: dict[str, str] = {}
        async with self._lock:
            for watched in _WATCHED:
                items, versions[watched.plural] = await self._list(watched)
                self._replace(watched, items)
            refused = await self._sync(list(self._nodes), _latest(*versions.values()))
        await self._refusals.report(refused)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._watch(watched, versions[watched.plural]), name=f"watch-{watched.plural}")
            for watched in _WATCHED
        ]
        self._synced.set()
        log.info(
            "edge controller started",
            extra={"edge_nodes": len(self._nodes), "pods": len(self._pods), "namespace": self._namespace},
        )

    async def wait(self) -> None:
        """Return (or raise) when a watch loop ended; they run until :meth:`stop`."""
        if not self._tasks:
            raise RuntimeError("EdgeController.wait() called before start()")
        await asyncio.gather(*(asyncio.shield(task) for task in self._tasks))

    async def stop(self) -> None:
        """Stop watching; what each node was sent is kept, so a new :meth:`start` sends only changes."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._synced.clear()

    async def wait_synced(self) -> None:
        """Wait until the first lists were handled (every edge node was sent what it needs)."""
        await self._synced.wait()

    # --- edge -> cloud ------------------------------------------------------------------------------------

    async def received(self, node: str, message: Message) -> None:
        """Handle a pod message from ``node`` (a status report, or the end of a graceful deletion).

        Raises a :class:`~cloudcore.errors.CloudCoreError` when the API is unavailable, so that the link
        does not acknowledge the message and the edge sends it again; messages that can never be accepted
        are refused (logged, counted) and not raised.
        """
        try:
            ref = ObjectRef.parse(message.resource)
        except MessageFormatError as exc:
            self._refuse(node, message, "invalid", str(exc))
            return
        if ref.type == ResourceType.POD_STATUS and message.operation in (Operation.UPDATE, Operation.INSERT):
            await self._pod_status(node, ref, message)
        elif ref.type == ResourceType.POD and message.operation is Operation.DELETE:
            await self._pod_stopped(node, ref, message)
        else:
            self._refuse(node, message, "unsupported", f"operation {message.operation} on a {ref.type}")

    async def _pod_status(self, node: str, ref: ObjectRef, message: Message) -> None:
        try:
            report = read_pod_status(message)
        except PodMessageError as exc:
            self._refuse(node, message, "invalid", exc.reason)
            return
        if report.name not in ("", ref.name):
            self._refuse(node, message, "invalid", f"content names pod {report.name!r}")
            return
        pod = self._pods.get(f"{ref.namespace}/{ref.name}") or await self._get_pod(ref)
        if pod is None or report.uid not in ("", _uid(pod)):
            await self._stale(node, ref, message, report.uid)
            return
        if _node_of(pod) != node:
            self._refuse(node, message, "other_node", f"pod is bound to {_node_of(pod)!r}")
            return
        status = dict(report.status)
        started = (pod.get("status") or {}).get("startTime")
        if started:
            status["startTime"] = started  # as a kubelet keeps it across updates
        try:
            patched = await request(
                self._api,
                "PATCH",
                f"/api/v1/namespaces/{ref.namespace}/pods/{ref.name}/status",
                body={"status": status},
                content_type=MERGE_PATCH,
                operation=f"patch status of pod {ref.namespace}/{ref.name}",
            )
        except KubeNotFoundError:
            await self._stale(node, ref, message, report.uid)
            return
        except KubeApiError as exc:
            if exc.status in _INVALID_STATUSES:
                self._refuse(node, message, "invalid", f"the API refused the status: {exc.message}")
                return
            self._metrics.errors.labels("status").inc()
            raise
        except KubeUnavailableError:
            self._metrics.errors.labels("status").inc()
            raise
        self._metrics.status_patches.inc()
        log.debug("pod status patched", extra={"node": node, "pod": f"{ref.namespace}/{ref.name}"})
        if _deleting(patched) and _containers_ended(patched):
            await self._finish_deletion(node, patched)

    async def _pod_stopped(self, node: str, ref: ObjectRef, message: Message) -> None:
        pod = await self._get_pod(ref)
        if pod is None:
            return  # deleted already: nothing left to finish
        uid = _content_uid(message.content)
        if _node_of(pod) != node:
            self._refuse(node, message, "other_node", f"pod is bound to {_node_of(pod)!r}")
        elif uid not in ("", _uid(pod)):
            self._refuse(node, message, "stale", f"pod uid {uid!r} is not the API's {_uid(pod)!r}")
        elif not _deleting(pod):
            self._refuse(node, message, "not_terminating", "the pod has no deletionTimestamp")
        else:
            await self._finish_deletion(node, pod)

    async def _finish_deletion(self, node: str, pod: JsonObject) -> None:
        """Delete ``pod`` now (``gracePeriodSeconds=0``, this uid only): its node has stopped it."""
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        options = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": _uid(pod)},
        }
        try:
            await request(
                self._api,
                "DELETE",
                f"/api/v1/namespaces/{namespace}/pods/{name}",
                body=options,
                operation=f"delete pod {namespace}/{name}",
            )
        except (KubeNotFoundError, KubeConflictError):
            return  # gone already, or replaced by a new pod of the same name
        except (KubeApiError, KubeUnavailableError):
            self._metrics.errors.labels("delete").inc()
            raise
        self._metrics.pods_deleted.inc()
        log.info(
            "pod deleted after its graceful termination", extra={"node": node, "pod": f"{namespace}/{name}"}
        )

    async def _stale(self, node: str, ref: ObjectRef, message: Message, uid: str) -> None:
        """A report about a Pod the API no longer has: refuse it, and tell the node to drop the Pod."""
        # Usual right after a deletion (the edge's last report crosses the delete): not worth a warning.
        self._refuse(node, message, "stale", "the API has no such pod", level=logging.INFO)
        pod_ref = {"metadata": {"namespace": ref.namespace, "name": ref.name, "uid": uid}}
        held = self._sent.get(node, {}).get(resource_of(ResourceType.POD, pod_ref))
        if held is None or held.object_rv is None:
            # Best effort (no version): the node is connected, it has just sent the report.
            await self._send(node, delete_message(ResourceType.POD, pod_ref))

    async def _get_pod(self, ref: ObjectRef) -> JsonObject | None:
        try:
            return await request(
                self._api,
                "GET",
                f"/api/v1/namespaces/{ref.namespace}/pods/{ref.name}",
                operation=f"read pod {ref.namespace}/{ref.name}",
            )
        except KubeNotFoundError:
            return None

    def _refuse(
        self, node: str, message: Message, reason: str, detail: str, *, level: int = logging.WARNING
    ) -> None:
        self._metrics.refused_messages.labels(reason).inc()
        log.log(
            level,
            "refused a pod message from edge node %s: %s",
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

    # --- cloud -> edge: watches ---------------------------------------------------------------------------

    async def _watch(self, watched: _Watched, resource_version: str | None) -> None:
        backoff = Backoff(self._backoff_policy)
        while True:
            try:
                if resource_version is None:
                    self._metrics.relists.labels(watched.plural).inc()
                    resource_version = await self._relist(watched)
                async with watch(
                    self._api,
                    self._path(watched),
                    resource_version,
                    timeout_seconds=self._watch_timeout,
                    query=watched.query,
                    operation=f"watch {watched.plural}",
                ) as events:
                    async for kind, obj in events:
                        backoff.reset()
                        resource_version = str(obj["metadata"]["resourceVersion"])
                        if kind != "BOOKMARK":
                            await self._event(watched, kind, obj)
            except WatchExpiredError as exc:
                log.info("watch of %s expired (%s); listing again", watched.plural, exc.message)
                resource_version = None
            except (KubeApiError, KubeUnavailableError) as exc:
                self._metrics.errors.labels("watch").inc()
                delay = backoff.next_delay()
                log.warning("watch of %s failed: %s; again in %.1fs", watched.plural, exc, delay)
                await asyncio.sleep(delay)

    async def _list(self, watched: _Watched) -> tuple[list[JsonObject], str]:
        found = await request(
            self._api, "GET", self._path(watched), query=watched.query, operation=f"list {watched.plural}"
        )
        return list(found.get("items") or []), str(found["metadata"]["resourceVersion"])

    async def _relist(self, watched: _Watched) -> str:
        """List ``watched`` again and send every node the difference (what the broken watch missed)."""
        items, resource_version = await self._list(watched)
        async with self._lock:
            self._replace(watched, items)
            refused = await self._sync(list(self._nodes), resource_version)
        await self._refusals.report(refused)
        return resource_version

    async def _event(self, watched: _Watched, kind: str, obj: JsonObject) -> None:
        async with self._lock:
            nodes = self._apply(watched.type, kind, obj)
            refused = await self._sync(nodes, _rv(obj))
        await self._refusals.report(refused)

    def _path(self, watched: _Watched) -> str:
        if watched.namespaced and self._namespace is not None:
            return f"/api/v1/namespaces/{self._namespace}/{watched.plural}"
        return f"/api/v1/{watched.plural}"

    # --- the caches -----------------------------------------------------------------------------------------

    def _replace(self, watched: _Watched, items: list[JsonObject]) -> None:
        """Make the cache of ``watched`` hold exactly ``items`` (a list's answer)."""
        if watched.type == ResourceType.NODE:
            self._nodes = {node["metadata"]["name"]: node for node in items}
        elif watched.type == ResourceType.POD:
            self._pods, self._node_pods = {}, {}
            for pod in items:
                self._apply(ResourceType.POD, "ADDED", pod)
        else:
            by_namespace: dict[str, dict[str, JsonObject]] = {}
            for obj in items:
                by_namespace.setdefault(obj["metadata"]["namespace"], {})[obj["metadata"]["name"]] = obj
            self._objects[watched.type] = by_namespace

    def _apply(self, kind: ResourceType, event: str, obj: JsonObject) -> set[str]:
        """Apply one watch event to the cache; the edge nodes whose share it may change."""
        metadata = obj["metadata"]
        if kind == ResourceType.NODE:
            if event == "DELETED":
                self._nodes.pop(metadata["name"], None)
            else:
                self._nodes[metadata["name"]] = obj
            return {metadata["name"]}
        namespace, name = metadata["namespace"], metadata["name"]
        if kind == ResourceType.POD:
            key = f"{namespace}/{name}"
            nodes: set[str] = set()
            old = self._pods.pop(key, None)
            if old is not None:
                nodes.add(_node_of(old))
                self._node_pods.get(_node_of(old), set()).discard(key)
            if event == "DELETED":
                self._refusals.forget(key)
            else:
                self._pods[key] = obj
                self._node_pods.setdefault(_node_of(obj), set()).add(key)
                nodes.add(_node_of(obj))
            return nodes
        objects = self._objects[kind].setdefault(namespace, {})
        if event == "DELETED":
            objects.pop(name, None)
        else:
            objects[name] = obj
        prefix = f"{namespace}/"
        return {node for node, keys in self._node_pods.items() if any(k.startswith(prefix) for k in keys)}

    # --- cloud -> edge: what each node holds ----------------------------------------------------------------

    async def _sync(self, nodes: Iterable[str], cause: str) -> list[tuple[str, JsonObject]]:
        """Send each edge node among ``nodes`` its difference; the Pods admission refused, with their node."""
        refused: list[tuple[str, JsonObject]] = []
        for node in sorted(set(nodes)):
            node_obj = self._nodes.get(node)
            if node_obj is None:
                continue  # not (or no longer) an edge node: what it was sent stays as it is
            wants = self._wanted(node, node_obj, refused)
            await self._reconcile(node, wants, cause)
        return refused

    def _wanted(
        self, node: str, node_obj: JsonObject, refused: list[tuple[str, JsonObject]]
    ) -> dict[str, _Want]:
        """What ``node`` must hold: dependents first, then Pods (the order inserts go in)."""
        held = self._sent.get(node, {})
        taint = edge_taint(node_obj)
        dependents: dict[str, _Want] = {}
        pods: dict[str, _Want] = {}
        namespaces: dict[str, str] = {}  # namespace -> newest resourceVersion of the node's pods there

        def want(kind: ResourceType, obj: JsonObject, because: str) -> None:
            resource = resource_of(kind, obj)
            known = dependents.get(resource)
            version = _latest(_rv(obj), because, known.version if known else "")
            dependents[resource] = _Want(kind, obj, version)

        for key in sorted(self._node_pods.get(node, ())):
            pod = self._pods[key]
            resource = resource_of(ResourceType.POD, pod)
            sent = held.get(resource)
            on_node = sent is not None and sent.object_rv is not None
            if taint is not None and not on_node and not tolerates(pod, taint):
                refused.append((node, pod))
                continue
            pod_rv = _rv(pod)
            pods[resource] = _Want(ResourceType.POD, pod, pod_rv)
            namespace = pod["metadata"]["namespace"]
            namespaces[namespace] = _latest(namespaces.get(namespace, ""), pod_rv)
            references = pod_references(pod)
            for kind, names in (
                (ResourceType.CONFIGMAP, references.configmaps),
                (ResourceType.SECRET, references.secrets),
            ):
                for name in sorted(names):
                    found = self._objects[kind].get(namespace, {}).get(name)
                    if found is not None:
                        want(kind, found, pod_rv)
        for namespace, pod_rv in namespaces.items():
            for kind in _PER_NAMESPACE:
                for obj in self._objects[kind].get(namespace, {}).values():
                    want(kind, obj, pod_rv)
        return dependents | pods

    async def _reconcile(self, node: str, wants: dict[str, _Want], cause: str) -> None:
        held = self._sent.setdefault(node, {})
        for resource, wanted in wants.items():
            sent = held.get(resource)
            object_rv = _rv(wanted.obj)
            digest = fingerprint(wanted.type, wanted.obj)
            if sent is None or sent.object_rv is None:
                operation = Operation.INSERT
            elif not is_newer(object_rv, sent.object_rv):
                continue
            elif digest == sent.fingerprint:
                sent.object_rv = object_rv  # nothing the edge acts on changed (a Pod's status)
                continue
            else:
                operation = Operation.UPDATE
            version = _next_version(sent, wanted.version)
            held[resource] = _Sent(version, object_rv, digest, identity(wanted.type, wanted.obj))
            await self._send(node, object_message(operation, wanted.type, wanted.obj, version))
        gone = [
            resource
            for resource, sent in held.items()
            if sent.object_rv is not None and resource not in wants
        ]
        # Pods go before what they name, so the edge never runs a Pod whose Secret it has dropped.
        gone.sort(key=lambda resource: ObjectRef.parse(resource).type != ResourceType.POD)
        for resource in gone:
            sent = held[resource]
            assert sent.object_rv is not None  # selected above
            sent.version = _next_version(sent, _latest(cause, sent.object_rv))
            sent.object_rv = None
            kind = ResourceType(ObjectRef.parse(resource).type)
            await self._send(node, delete_message(kind, sent.identity, sent.version))

    async def _send(self, node: str, message: Message) -> None:
        self._metrics.messages_sent.labels(
            ObjectRef.parse(message.resource).type, message.operation.value
        ).inc()
        log.debug(
            "to edge node",
            extra={
                "node": node,
                "resource": message.resource,
                "operation": message.operation.value,
                "resource_version": message.header.resource_version,
            },
        )
        try:
            await self._send_to(node, message)
        except Exception:  # the link must never stop the controller; it logs why
            self._metrics.errors.labels("send").inc()
            log.exception(
                "cannot hand a message to the cloud link", extra={"node": node, "resource": message.resource}
            )


def _rv(obj: JsonObject) -> str:
    return str(obj["metadata"]["resourceVersion"])


def _uid(pod: JsonObject) -> str:
    return str(pod["metadata"].get("uid") or "")


def _node_of(pod: JsonObject) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


def _content_uid(content: object) -> str:
    """The ``metadata.uid`` a pod delete from the edge names, if any."""
    metadata = content.get("metadata") if isinstance(content, dict) else None
    return str(metadata.get("uid") or "") if isinstance(metadata, dict) else ""


def _deleting(pod: JsonObject) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def _containers_ended(pod: JsonObject) -> bool:
    """Whether the Pod has finished and none of its containers runs (KubeEdge's ``isPodNotRunning``)."""
    status: dict[str, Any] = pod.get("status") or {}
    if status.get("phase") not in _FINISHED_PHASES:
        return False
    return all("running" not in (entry.get("state") or {}) for entry in status.get("containerStatuses") or [])


def _latest(*versions: str) -> str:
    """The newest of ``versions`` (empty ones ignored)."""
    newest = ""
    for version in versions:
        if version and is_newer(version, newest):
            newest = version
    return newest


def _next_version(sent: _Sent | None, candidate: str) -> str:
    """``candidate``, unless it is not newer than the last version sent: then one past that."""
    if sent is None or is_newer(candidate, sent.version):
        return candidate
    if sent.version.isdigit():
        return str(int(sent.version) + 1)
    return f"{sent.version}.1"

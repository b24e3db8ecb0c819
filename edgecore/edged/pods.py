"""Edged: runs the node's pods from the MetaManager in containerd (through CRI), as KubeEdge's edged does.

Desired state is every pod in the MetaManager whose ``spec.nodeName`` is this node; actual state is what the
runtime runs under Edged's labels. One :class:`~edgecore.edged.worker.PodWorker` per pod (one task, its
events in order) reconciles the two. Workers are triggered by:

* MetaManager events: a pod added, changed (``deletionTimestamp`` set: graceful termination) or deleted; a
  ConfigMap or Secret a pod uses (its volumes are swapped in place, see :mod:`edgecore.edged.volumes`);
* a relist of the runtime every ``relist_period`` (kubelet's PLEG): a container that changed state (exited,
  was killed) re-syncs its pod at once, so a crash is restarted without waiting for the resync;
* a full resync every ``sync_period``, which also removes sandboxes of pods that are no longer desired.

On start Edged *adopts*: a running sandbox or container of a pod that is still desired is kept as it is
(found by kubelet's ``io.kubernetes.pod.uid`` label), never killed and recreated; those of other pods are
removed. On stop the containers keep running, so an edgecore restart (even after ``kill -9``) does not
disturb the workloads.

Reports (through ``report``, the cloud link): ``<ns>/podstatus/<name>`` ``update`` with KubeEdge's
``PodStatusRequest`` content ``{"UID", "Name", "Status": <v1 PodStatus>}`` when the status changes (an
unchanged status is not sent again), and ``<ns>/pod/<name>`` ``delete`` with ``{"metadata": {"uid"}}`` once
a gracefully deleted pod's containers are gone (the cloud then deletes the Pod, as kubelet's final delete
does); see ``cloudcore.edge.messages``. :meth:`Edged.report_all` re-sends every status (call it when the
link is back).

Networking: with no pod network (CNI) on the node, ``host_network_default=True`` runs every pod in the
node's network namespace (pod IP = node IP), as most edge nodes do; set it False where CNI is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry

from cloudsync import Message
from edgecore.edged.metrics import EdgedMetrics
from edgecore.edged.models import ContainerState
from edgecore.edged.runtime import DEFAULT_CGROUP_PARENT, ContainerRuntime
from edgecore.edged.worker import PodWorker, WorkerContext, remove_pod_files
from edgecore.errors import ContainerRuntimeError
from edgecore.metamanager import EventType, MetaEvent, MetaManager, Subscription
from eventbus import BackoffPolicy

__all__ = ["CRASH_LOOP_BACKOFF", "Edged", "pod_uses"]

logger = logging.getLogger(__name__)

CRASH_LOOP_BACKOFF: Final = BackoffPolicy(minimum=10.0, maximum=300.0, factor=2.0, jitter=0.0)
"""kubelet's crash-loop back-off: 10 s doubling to 5 min, no jitter."""

_WATCHED: Final = frozenset({"pod", "configmap", "secret"})

Object = dict[str, Any]


def pod_uses(pod: Mapping[str, Any], resource_type: str, name: str) -> bool:
    """Whether ``pod`` reads the ConfigMap or Secret ``name`` (volumes, env, envFrom) of its namespace."""
    spec = pod.get("spec") or {}
    if resource_type == "configmap":
        volume_key, name_key, env_ref, from_ref = "configMap", "name", "configMapKeyRef", "configMapRef"
    else:
        volume_key, name_key, env_ref, from_ref = "secret", "secretName", "secretKeyRef", "secretRef"
    for volume in spec.get("volumes") or []:
        if (volume.get(volume_key) or {}).get(name_key) == name:
            return True
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for entry in container.get("env") or []:
            if ((entry.get("valueFrom") or {}).get(env_ref) or {}).get("name") == name:
                return True
        for source in container.get("envFrom") or []:
            if (source.get(from_ref) or {}).get("name") == name:
                return True
    return False


class Edged:
    """The pod sync as a supervised module (``start`` / ``wait`` / ``stop``); see the module docstring.

    ``runtime_address`` is containerd's CRI socket; ``root_dir`` holds the pods' logs
    (``pods/<ns>_<name>_<uid>/<container>/<n>.log``) and volumes (``volumes/<uid>/...``). ``node_ip`` is
    the node's InternalIP (the pods' ``hostIP``, and ``podIP`` of host-network pods). ``backoff`` is the
    crash-loop back-off of containers and image pulls.
    """

    name = "edged"

    def __init__(
        self,
        meta: MetaManager,
        runtime_address: str,
        node_name: str,
        *,
        root_dir: Path,
        report: Callable[[Message], Awaitable[None]],
        registry: CollectorRegistry | None = None,
        host_network_default: bool = True,
        sync_period: float = 10.0,
        relist_period: float = 1.0,
        backoff: BackoffPolicy = CRASH_LOOP_BACKOFF,
        node_ip: str = "127.0.0.1",
        cgroup_parent: str = DEFAULT_CGROUP_PARENT,
        runtime_timeout: float = 10.0,
    ) -> None:
        self.meta = meta
        self.node_name = node_name
        self.root_dir = root_dir
        self.sync_period = sync_period
        self.relist_period = relist_period
        self._metrics = EdgedMetrics.create(registry)
        self.runtime = ContainerRuntime(
            runtime_address, timeout=runtime_timeout, cgroup_parent=cgroup_parent, registry=registry
        )
        self._context = WorkerContext(
            runtime=self.runtime,
            objects=meta,
            root_dir=root_dir,
            node_ip=node_ip,
            host_network_default=host_network_default,
            backoff=backoff,
            metrics=self._metrics,
            report=report,
        )
        self._workers: dict[str, PodWorker] = {}
        self._finished: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._subscription: Subscription | None = None
        self._failed: asyncio.Future[None] | None = None

    # -- module life --------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt what runs, remove what is no longer desired, start a worker per pod and the loops.

        Raises :class:`~edgecore.errors.RuntimeUnavailableError` when containerd does not answer and
        :class:`~edgecore.errors.MetaStoreError` when the MetaManager is not running (the supervisor retries).
        """
        version = await self.runtime.version()
        self._failed = asyncio.get_running_loop().create_future()
        # Subscribe and list in the same step: every later change arrives through the feed.
        self._subscription = self.meta.subscribe(_WATCHED)
        pods = [pod for pod in self.meta.list("pod") if self._mine(pod)]
        await self._remove_orphans({_uid(pod) for pod in pods})
        for pod in pods:
            self._worker_for(pod)
        self._spawn(self._follow(self._subscription), "edged-events")
        self._spawn(self._resync_loop(), "edged-resync")
        self._spawn(self._relist_loop(), "edged-relist")
        logger.info("edged running", extra={"node": self.node_name, "pods": len(pods), "runtime": version})

    async def wait(self) -> None:
        """Raise when a loop of Edged failed (a bug: the supervisor restarts the module)."""
        if self._failed is not None:
            await asyncio.shield(self._failed)

    async def stop(self) -> None:
        """Stop the loops and workers (the containers keep running) and close the runtime client."""
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        workers, self._workers = list(self._workers.values()), {}
        await asyncio.gather(*(worker.stop() for worker in workers))
        self._metrics.pods.set(0)
        self._failed = None
        await self.runtime.close()

    # -- what others call ---------------------------------------------------------------------------------

    def pod_status(self, uid: str) -> Object | None:
        """The last PodStatus computed for the pod with ``uid`` (None if Edged does not run it)."""
        worker = self._workers.get(uid)
        return worker.status if worker is not None else None

    def report_all(self) -> None:
        """Report every pod's status again soon, changed or not (the cloud link reconnected)."""
        for worker in self._workers.values():
            worker.report_again()

    # -- internals ----------------------------------------------------------------------------------------

    def _mine(self, pod: Mapping[str, Any]) -> bool:
        return (pod.get("spec") or {}).get("nodeName") == self.node_name and bool(_uid(pod))

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coroutine, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._failed is None or self._failed.done():
            return
        error = task.exception()
        if error is not None:
            logger.error("edged loop failed", extra={"task": task.get_name(), "error": repr(error)})
            self._failed.set_exception(error)

    def _worker_for(self, pod: Object) -> None:
        uid = _uid(pod)
        if uid in self._finished:
            return  # removed after a graceful deletion; the cloud's delete is on its way
        worker = self._workers.get(uid)
        if worker is not None:
            worker.update(pod)
            return
        worker = PodWorker(self._context, pod, on_done=self._worker_done)
        self._workers[uid] = worker
        task = worker.start()
        task.add_done_callback(self._task_done)
        self._metrics.pods.set(len(self._workers))

    def _worker_done(self, worker: PodWorker, graceful: bool) -> None:
        if self._workers.get(worker.uid) is worker:
            del self._workers[worker.uid]
        if graceful:
            self._finished.add(worker.uid)
        self._metrics.pods.set(len(self._workers))

    async def _follow(self, subscription: Subscription) -> None:
        async for event in subscription:
            self._handle(event)

    def _handle(self, event: MetaEvent) -> None:
        if event.resource_type != "pod":
            metadata = event.object.get("metadata") or {}
            namespace, name = metadata.get("namespace"), metadata.get("name")
            for worker in self._workers.values():
                if worker.namespace == namespace and pod_uses(worker.pod, event.resource_type, str(name)):
                    worker.trigger()
            return
        pod, previous = event.object, event.previous
        if previous is not None and _uid(previous) != _uid(pod):
            self._forget(_uid(previous))  # same name, another pod: the old one goes
        if event.type == EventType.DELETED or not self._mine(pod):
            self._forget(_uid(pod))
            return
        self._worker_for(pod)

    def _forget(self, uid: str) -> None:
        self._finished.discard(uid)
        worker = self._workers.get(uid)
        if worker is not None:
            worker.remove()

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sync_period)
            for worker in self._workers.values():
                worker.trigger()
            try:
                await self._remove_orphans(set(self._workers))
            except ContainerRuntimeError as exc:
                logger.warning("orphan sandbox cleanup failed", extra={"error": str(exc)})

    async def _relist_loop(self) -> None:
        states: dict[str, tuple[str, ContainerState]] = {}
        while True:
            await asyncio.sleep(self.relist_period)
            try:
                current = await self.runtime.container_states()
            except ContainerRuntimeError as exc:
                logger.debug("relist failed", extra={"error": str(exc)})
                continue
            changed = {
                uid for key, (uid, state) in current.items() if states.get(key, ("", None))[1] != state
            }
            changed |= {uid for key, (uid, _) in states.items() if key not in current}
            states = current
            for uid in changed:
                if (worker := self._workers.get(uid)) is not None:
                    worker.trigger()

    async def _remove_orphans(self, desired: set[str]) -> None:
        """Stop and remove the sandboxes of pods Edged does not run (deleted while it was away)."""
        for sandbox in await self.runtime.list_pod_sandboxes():
            if sandbox.pod_uid in desired or sandbox.pod_uid in self._workers:
                continue
            logger.info(
                "removing the sandbox of a pod no longer on this node",
                extra={"sandbox": sandbox.id, "pod": f"{sandbox.pod_namespace}/{sandbox.pod_name}"},
            )
            await self.runtime.stop_pod_sandbox(sandbox.id)
            await self.runtime.remove_pod_sandbox(sandbox.id)
            owner = {"namespace": sandbox.pod_namespace, "name": sandbox.pod_name, "uid": sandbox.pod_uid}
            await remove_pod_files(self.root_dir, {"metadata": owner})


def _uid(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("uid") or "")

"""One pod's sync loop: make containerd run what the pod asks for, and report how it goes.

A :class:`PodWorker` owns one pod (by uid) and one task. Every trigger (a change of the pod or of a
ConfigMap / Secret it uses, a container that changed state, a probe flipping, the periodic resync) runs one
*sync*, in order, with the latest pod object:

1. a pod that is deleted (``metadata.deletionTimestamp``) or no longer desired: stop its containers with the
   grace period, remove its sandboxes, volumes and logs; report the delete after a graceful deletion;
2. otherwise find the pod's ready sandbox, by kubelet's labels (so a restarted Edged adopts what runs), or
   create one; write its volumes (a changed ConfigMap / Secret is swapped in);
3. per container: keep a running one (restart it when its liveness probe failed), start a missing one
   (image present or pulled, environment resolved), restart an exited one as ``restartPolicy`` says, after
   the crash-loop back-off (first restart at once, then ``backoff.minimum`` doubling up to
   ``backoff.maximum``, reset after a run of twice the maximum, as kubelet);
4. compute the PodStatus and report it when it differs from the last one reported.

Runtime failures (containerd away) are retried with a short back-off; they never end the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cloudsync import Group, Message, Operation
from edgecore.edged.env import PodAddresses, container_command
from edgecore.edged.metrics import EdgedMetrics
from edgecore.edged.models import ContainerInfo, ContainerState, SandboxInfo, SandboxState
from edgecore.edged.probes import ContainerProbes, ProbeKind, check_probes
from edgecore.edged.runtime import ContainerRuntime
from edgecore.edged.specs import IMAGE_ANNOTATION, POD_UID_LABEL, pod_log_dir
from edgecore.edged.status import ContainerView, PodPhase, pod_phase, pod_status
from edgecore.edged.volumes import ObjectSource, VolumeSet, prepare_volumes, remove_pod_volumes
from edgecore.errors import ContainerRuntimeError, PodConfigError, PodSpecError, RuntimeCallError
from eventbus import Backoff, BackoffPolicy

__all__ = ["SOURCE", "PodWorker", "WorkerContext", "remove_pod_files"]

logger = logging.getLogger(__name__)

SOURCE = "edged"
"""``route.source`` of the messages Edged reports."""
DEFAULT_GRACE_SECONDS = 30
_RETRY = BackoffPolicy(minimum=0.5, maximum=10.0)
"""Back-off of a sync that failed on the runtime (containerd restarting): short, it is not the pod's fault."""

Object = dict[str, Any]


@dataclass(frozen=True)
class WorkerContext:
    """What every pod worker of one Edged shares."""

    runtime: ContainerRuntime
    objects: ObjectSource
    root_dir: Path
    node_ip: str
    host_network_default: bool
    backoff: BackoffPolicy
    metrics: EdgedMetrics
    report: Callable[[Message], Awaitable[None]]


@dataclass
class _RestartBackoff:
    """kubelet's crash-loop back-off of one container: when the next restart may happen."""

    backoff: Backoff
    last_restart: float = field(default=-1.0)
    delay: float = 0.0

    def remaining(self, now: float) -> float:
        if self.last_restart < 0:
            return 0.0
        return max(0.0, self.last_restart + self.delay - now)

    def restarted(self, now: float) -> None:
        if self.last_restart >= 0 and now - self.last_restart > 2 * self.backoff.policy.maximum:
            self.backoff.reset()  # it ran long enough: the next crash starts over
        self.delay = self.backoff.next_delay()
        self.last_restart = now


def _is_sidecar(container: Mapping[str, Any]) -> bool:
    return container.get("restartPolicy") == "Always"


def _succeeded(info: ContainerInfo) -> bool:
    return info.state == ContainerState.EXITED and info.exit_code == 0


def _should_restart(policy: str, info: ContainerInfo) -> bool:
    if policy == "Never":
        return False
    if policy == "OnFailure":
        return info.exit_code != 0
    return True


async def remove_pod_files(root: Path, pod: Mapping[str, Any]) -> None:
    """Remove a pod's volumes and logs under Edged's ``root`` (hostPath volumes are never touched)."""
    await asyncio.to_thread(remove_pod_volumes, root, str(pod["metadata"]["uid"]))
    await asyncio.to_thread(shutil.rmtree, pod_log_dir(root / "pods", pod), True)


class PodWorker:
    """The sync loop of one pod (see the module docstring). ``on_done`` runs when it removed the pod."""

    def __init__(
        self, context: WorkerContext, pod: Object, *, on_done: Callable[[PodWorker, bool], None]
    ) -> None:
        self.context = context
        self.pod = pod
        metadata = pod["metadata"]
        self.uid: str = metadata["uid"]
        self.namespace: str = metadata.get("namespace", "")
        self.name: str = metadata["name"]
        self._on_done = on_done
        self._removed = False
        self._wakeup = asyncio.Event()
        self._wake_at: float | None = None
        self._restarts: dict[str, _RestartBackoff] = {}
        self._pulls: dict[str, _RestartBackoff] = {}
        self._probes: dict[str, ContainerProbes] = {}
        self._status: Object | None = None
        self._reported: Object | None = None
        self._start_time: datetime | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def key(self) -> str:
        """``<namespace>/<name>`` of the pod."""
        return f"{self.namespace}/{self.name}"

    @property
    def status(self) -> Object | None:
        """The last PodStatus computed (None before the first sync)."""
        return self._status

    def start(self) -> asyncio.Task[None]:
        """Start the loop (it syncs at once); the task ends when the pod is removed."""
        self._wakeup.set()
        self._task = asyncio.create_task(self._run(), name=f"pod-{self.key}")
        return self._task

    async def stop(self) -> None:
        """End the loop and the probes; the pod's containers keep running (a later Edged adopts them)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._stop_probes()

    def update(self, pod: Object) -> None:
        """The pod changed: sync with this version."""
        self.pod = pod
        self.trigger()

    def remove(self) -> None:
        """The pod is no longer desired here: remove it (without a graceful delete report)."""
        self._removed = True
        self.trigger()

    def trigger(self) -> None:
        """Sync soon."""
        self._wakeup.set()

    def report_again(self) -> None:
        """Report the status again even if unchanged (the cloud link came back)."""
        self._reported = None
        self.trigger()

    # -- the loop -----------------------------------------------------------------------------------------

    def _wake_after(self, delay: float) -> None:
        at = time.monotonic() + delay
        self._wake_at = at if self._wake_at is None else min(self._wake_at, at)

    async def _run(self) -> None:
        retry = Backoff(_RETRY)
        while True:
            timeout = None if self._wake_at is None else max(0.0, self._wake_at - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)
            self._wakeup.clear()
            self._wake_at = None
            try:
                done = await self._sync()
            except ContainerRuntimeError as exc:
                self.context.metrics.syncs.labels("error").inc()
                delay = retry.next_delay()
                logger.warning(
                    "pod sync failed; retrying",
                    extra={"pod": self.key, "uid": self.uid, "error": str(exc), "retry_in": round(delay, 2)},
                )
                self._wake_after(delay)
                continue
            self.context.metrics.syncs.labels("ok").inc()
            retry.reset()
            if done:
                self._task = None
                self._on_done(self, not self._removed)
                return

    async def _sync(self) -> bool:
        """One sync; True once the pod is gone from the node."""
        pod = self.pod
        if self._removed or (pod.get("metadata") or {}).get("deletionTimestamp"):
            return await self._terminate(pod)
        runtime = self.context.runtime
        sandboxes = await runtime.list_pod_sandboxes({POD_UID_LABEL: self.uid})
        views = self._views(await self._history(), {})
        if self._terminal(pod, views):
            for sandbox in sandboxes:
                if sandbox.state == SandboxState.READY:
                    await runtime.stop_pod_sandbox(sandbox.id)  # frees its namespaces; statuses stay
            await self._publish(pod, views, sandboxes[-1] if sandboxes else None)
            return False
        sandbox = await self._sandbox(pod, sandboxes)
        try:
            volumes: VolumeSet | str = await asyncio.to_thread(
                prepare_volumes, pod, self.context.root_dir, self.context.objects
            )
        except (PodConfigError, PodSpecError) as exc:
            volumes = f"MountVolume.SetUp failed: {exc}"
        history = await self._history()
        spec = pod.get("spec") or {}
        policy = str(spec.get("restartPolicy", "Always"))
        waiting: dict[str, tuple[str, str]] = {}
        initialized = True
        for container in spec.get("initContainers") or []:
            # One at a time, in order; each must succeed (a sidecar: run and start) before the next one and
            # the app containers start. Sidecars are kept running from then on, as app containers are.
            name = str(container.get("name"))
            infos = history.get(name, [])
            sidecar = _is_sidecar(container)
            if not sidecar and infos and _succeeded(infos[-1]):
                continue
            init_policy = "Always" if sidecar else "Never" if policy == "Never" else "OnFailure"
            reason = await self._sync_container(pod, sandbox, container, infos, volumes, policy=init_policy)
            if reason is not None:
                waiting[name] = reason
            probes = self._probes.get(name)
            running = bool(infos) and infos[-1].state == ContainerState.RUNNING
            if sidecar and running and (probes is None or probes.started):
                continue
            initialized = False
            break
        for container in (spec.get("containers") or []) if initialized else []:
            name = str(container.get("name"))
            infos = history.get(name, [])
            reason = await self._sync_container(pod, sandbox, container, infos, volumes, policy=policy)
            if reason is not None:
                waiting[name] = reason
        history = await self._history()
        await self._publish(pod, self._views(history, waiting), sandbox)
        return False

    def _terminal(self, pod: Object, views: list[ContainerView]) -> bool:
        """Whether the pod is done for good: never run it again (also after an Edged restart)."""
        known = [self._status, pod.get("status")]
        if any(isinstance(status, dict) and status.get("phase") in PodPhase.TERMINAL for status in known):
            return True
        phase = pod_phase(pod, views)
        if phase not in PodPhase.TERMINAL:
            return False
        # Failed while initialising: the app containers never ran, and never will.
        return phase == PodPhase.FAILED or all(view.current is not None for view in views if not view.init)

    # -- sandbox ------------------------------------------------------------------------------------------

    def _host_network(self, pod: Mapping[str, Any]) -> bool:
        return bool((pod.get("spec") or {}).get("hostNetwork")) or self.context.host_network_default

    async def _sandbox(self, pod: Object, sandboxes: list[SandboxInfo]) -> SandboxInfo:
        runtime = self.context.runtime
        ready = [sandbox for sandbox in sandboxes if sandbox.state == SandboxState.READY]
        if ready:
            for extra in ready[:-1]:  # never more than one: keep the newest
                await self._remove_sandbox(extra.id)
            return ready[-1]
        for old in sandboxes:  # its namespaces are gone: the containers start over in a new one
            await self._remove_sandbox(old.id)
        await self._stop_probes()
        log_dir = pod_log_dir(self.context.root_dir / "pods", pod)
        sandbox_id = await runtime.run_pod_sandbox(
            pod, host_network=self._host_network(pod), log_dir=log_dir, attempt=len(sandboxes)
        )
        return await runtime.pod_sandbox_status(sandbox_id)

    async def _remove_sandbox(self, sandbox_id: str) -> None:
        await self.context.runtime.stop_pod_sandbox(sandbox_id)
        await self.context.runtime.remove_pod_sandbox(sandbox_id)

    # -- containers ---------------------------------------------------------------------------------------

    async def _history(self) -> dict[str, list[ContainerInfo]]:
        """The pod's containers by name, oldest first."""
        history: dict[str, list[ContainerInfo]] = {}
        for info in await self.context.runtime.list_containers(labels={POD_UID_LABEL: self.uid}):
            history.setdefault(info.name, []).append(info)
        return history

    def _views(
        self, history: Mapping[str, list[ContainerInfo]], waiting: Mapping[str, tuple[str, str]]
    ) -> list[ContainerView]:
        """Init containers first (``init``), then the app containers."""
        spec = self.pod.get("spec") or {}
        views: list[ContainerView] = []
        for init, containers in ((True, spec.get("initContainers")), (False, spec.get("containers"))):
            initialized = all(view.init_done for view in views)
            for container in containers or []:
                name = str(container.get("name"))
                infos = history.get(name, [])
                current = infos[-1] if infos else None
                probes = self._probes.get(name)
                if probes is not None and (current is None or probes.container_id != current.id):
                    probes = None  # those of an earlier container
                if init and not _is_sidecar(container):
                    ready = current is not None and _succeeded(current)
                else:
                    ready = (
                        current is not None
                        and current.state == ContainerState.RUNNING
                        and probes is not None
                        and probes.ready
                    )
                started = probes.started if probes is not None else not container.get("startupProbe")
                views.append(
                    ContainerView(
                        name=name,
                        image=str(container.get("image", "")),
                        current=current,
                        previous=infos[-2] if len(infos) > 1 else None,
                        waiting=waiting.get(name, None if initialized else ("PodInitializing", "")),
                        ready=ready,
                        started=started,
                        init=init,
                        sidecar=init and _is_sidecar(container),
                    )
                )
        return views

    def _grace(self, pod: Mapping[str, Any]) -> int:
        metadata, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        for value in (metadata.get("deletionGracePeriodSeconds"), spec.get("terminationGracePeriodSeconds")):
            if isinstance(value, int):
                return max(0, value)
        return DEFAULT_GRACE_SECONDS

    async def _sync_container(
        self,
        pod: Object,
        sandbox: SandboxInfo,
        container: Mapping[str, Any],
        infos: list[ContainerInfo],
        volumes: VolumeSet | str,
        *,
        policy: str,
    ) -> tuple[str, str] | None:
        """Bring one container where it should be (``policy``: its restartPolicy); return why it waits."""
        name = str(container.get("name"))
        runtime = self.context.runtime
        current = infos[-1] if infos else None
        probes = self._probes.get(name)
        if probes is not None and (current is None or probes.container_id != current.id):
            await self._stop_probes(name)
            probes = None
        if current is not None and current.state == ContainerState.RUNNING:
            had, wanted = current.annotations.get(IMAGE_ANNOTATION), container.get("image")
            if had is not None and had != wanted:
                # The one container field a pod update may change: kubelet replaces the container.
                logger.info(
                    "container image changed; replacing the container",
                    extra={"pod": self.key, "container_name": name, "image": wanted, "was": had},
                )
                self.context.metrics.restarts.labels("image").inc()
                await self._stop_probes(name)
                await runtime.stop_container(current.id, self._grace(pod))
                return await self._start(pod, sandbox, container, volumes, current.restart_count + 1)
            if probes is None:
                probes = ContainerProbes(
                    runtime,
                    current.id,
                    container,
                    pod_ip=self._pod_ip(sandbox),
                    started_at=current.started_at,
                    on_change=self.trigger,
                )
                self._probes[name] = probes
                probes.start()
            failed = probes.failed
            if failed is None:
                return None
            cause = "startup" if failed is ProbeKind.STARTUP else "liveness"
            logger.info(
                "container failed its %s probe; restarting",
                cause,
                extra={"pod": self.key, "container_name": name, "container": current.id},
            )
            self.context.metrics.restarts.labels(cause).inc()
            await self._stop_probes(name)
            await runtime.stop_container(current.id, self._grace(pod))
            current = await runtime.container_status(current.id)
        if current is not None and current.state == ContainerState.EXITED:
            await self._stop_probes(name)
            if not _should_restart(policy, current):
                return None
            restart = self._restarts.setdefault(name, _RestartBackoff(Backoff(self.context.backoff)))
            remaining = restart.remaining(time.monotonic())
            if remaining > 0:
                self._wake_after(remaining)
                message = f"back-off {restart.delay:g}s restarting failed container={name} pod={self.name}"
                return ("CrashLoopBackOff", message)
            outcome = await self._start(pod, sandbox, container, volumes, current.restart_count + 1)
            if outcome is not None:
                return outcome
            restart.restarted(time.monotonic())
            self.context.metrics.restarts.labels("exited").inc()
            for old in infos[:-1]:  # kubelet keeps the last dead container only (for lastState)
                await runtime.remove_container(old.id)
            return None
        if current is not None and current.state != ContainerState.EXITED:
            # Created but never started (Edged stopped between the two calls), or unknown: start over.
            await runtime.remove_container(current.id)
        count = current.restart_count if current is not None else 0
        return await self._start(pod, sandbox, container, volumes, count)

    async def _ensure_image(self, container: Mapping[str, Any]) -> tuple[str, str] | None:
        image = str(container.get("image", ""))
        runtime = self.context.runtime
        if await runtime.has_image(image):
            return None
        if container.get("imagePullPolicy") == "Never":
            return ("ErrImageNeverPull", f'image "{image}" is not present with pull policy of Never')
        pull = self._pulls.setdefault(image, _RestartBackoff(Backoff(self.context.backoff)))
        remaining = pull.remaining(time.monotonic())
        if remaining > 0:
            self._wake_after(remaining)
            return ("ImagePullBackOff", f'Back-off pulling image "{image}"')
        pull.restarted(time.monotonic())
        try:
            await runtime.pull_image(image)
        except ContainerRuntimeError as exc:
            self._wake_after(pull.remaining(time.monotonic()))
            return ("ErrImagePull", str(exc))
        self._pulls.pop(image, None)
        return None

    async def _start(
        self,
        pod: Object,
        sandbox: SandboxInfo,
        container: Mapping[str, Any],
        volumes: VolumeSet | str,
        restart_count: int,
    ) -> tuple[str, str] | None:
        """Create and start a container; return why it cannot start yet, if so."""
        if (pulling := await self._ensure_image(container)) is not None:
            return pulling
        if isinstance(volumes, str):
            return ("ContainerCreating", volumes)
        addresses = PodAddresses(pod_ip=self._pod_ip(sandbox), host_ip=self.context.node_ip)
        try:
            command = container_command(pod, container, self.context.objects, addresses)
            mounts = volumes.mounts(container)
            check_probes(container)
        except (PodConfigError, PodSpecError) as exc:
            return ("CreateContainerConfigError", str(exc))
        runtime = self.context.runtime
        spec = {**container, "command": command.command, "args": command.args}
        try:
            container_id = await runtime.create_container(
                sandbox.id, pod, spec, mounts=mounts, env=command.env, restart_count=restart_count
            )
        except PodSpecError as exc:
            return ("CreateContainerConfigError", str(exc))
        except RuntimeCallError as exc:
            return ("CreateContainerError", exc.detail)
        with contextlib.suppress(RuntimeCallError):
            # A refused start (e.g. no such executable) leaves the container exited with the reason:
            # the restart policy and its back-off handle it like any other exit.
            await runtime.start_container(container_id)
        self.trigger()  # sync again at once: it finds the container running and starts its probes
        logger.info(
            "container started",
            extra={"pod": self.key, "container_name": container.get("name"), "restart_count": restart_count},
        )
        return None

    async def _stop_probes(self, name: str | None = None) -> None:
        names = [name] if name is not None else list(self._probes)
        for key in names:
            probes = self._probes.pop(key, None)
            if probes is not None:
                await probes.stop()

    # -- status -------------------------------------------------------------------------------------------

    def _pod_ip(self, sandbox: SandboxInfo | None) -> str:
        if sandbox is None:
            return ""
        return self.context.node_ip if sandbox.host_network else sandbox.ip

    async def _publish(self, pod: Object, views: list[ContainerView], sandbox: SandboxInfo | None) -> None:
        if self._start_time is None:
            recorded = (pod.get("status") or {}).get("startTime")
            if isinstance(recorded, str) and recorded:
                with contextlib.suppress(ValueError):
                    self._start_time = datetime.fromisoformat(recorded.replace("Z", "+00:00"))
            if self._start_time is None and sandbox is not None:
                self._start_time = sandbox.created_at
        self._status = pod_status(
            pod,
            views,
            pod_ip=self._pod_ip(sandbox),
            host_ip=self.context.node_ip,
            start_time=self._start_time,
            previous=self._status,
            now=datetime.now(UTC),
        )
        if self._status == self._reported:
            return
        status = self._status
        message = Message.new(
            source=SOURCE,
            group=Group.RESOURCE,
            operation=Operation.UPDATE,
            resource=f"{self.namespace}/podstatus/{self.name}",
            content={"UID": self.uid, "Name": self.name, "Status": status},
        )
        if await self._send(message, "status"):
            self._reported = status
            logger.debug("pod status reported", extra={"pod": self.key, "phase": status["phase"]})

    async def _send(self, message: Message, kind: str) -> bool:
        try:
            await self.context.report(message)
        except Exception as exc:  # noqa: BLE001 - whatever the link raises, the pod keeps running
            self.context.metrics.reports.labels(kind, "failed").inc()
            logger.warning(
                "pod report failed; will retry", extra={"pod": self.key, "kind": kind, "error": repr(exc)}
            )
            self._wake_after(self.context.backoff.minimum)
            return False
        self.context.metrics.reports.labels(kind, "sent").inc()
        return True

    # -- removal ------------------------------------------------------------------------------------------

    async def _terminate(self, pod: Object) -> bool:
        """Stop and remove the pod; True once done (and its graceful delete reported)."""
        runtime = self.context.runtime
        grace = self._grace(pod)
        await self._stop_probes()
        running = [
            info
            for info in await runtime.list_containers(labels={POD_UID_LABEL: self.uid})
            if info.state == ContainerState.RUNNING
        ]
        await asyncio.gather(*(runtime.stop_container(info.id, grace) for info in running))
        for sandbox in await runtime.list_pod_sandboxes({POD_UID_LABEL: self.uid}):
            await self._remove_sandbox(sandbox.id)
        await remove_pod_files(self.context.root_dir, pod)
        logger.info("pod removed", extra={"pod": self.key, "uid": self.uid, "grace_seconds": grace})
        if self._removed:
            return True
        message = Message.new(
            source=SOURCE,
            group=Group.RESOURCE,
            operation=Operation.DELETE,
            resource=f"{self.namespace}/pod/{self.name}",
            content={"metadata": {"uid": self.uid}},
        )
        return await self._send(message, "delete")  # if not, the next sync (soon) sends it again

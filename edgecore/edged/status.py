"""A pod's v1 ``PodStatus`` from what Edged sees of it, computed as kubelet computes it.

``containerStatuses`` come from each container's latest CRI container (and the one before it, for
``lastState``) plus why it is not running when Edged knows better than the runtime (``ErrImagePull``,
``CrashLoopBackOff``, ``CreateContainerConfigError``, ...); ``initContainerStatuses`` likewise. The phase
follows kubelet's rules: a pod is Pending until every init container succeeded (Failed if one failed under
``restartPolicy: Never``); then a container waiting for its first start keeps the pod Pending; a running one
makes it Running; once every container stopped, ``restartPolicy`` decides between Running (it will restart),
Succeeded and Failed. Condition transition times are carried over from the previous status while a condition
keeps its value, so that an unchanged pod computes an identical status (and is not reported again).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from edgecore.edged.models import ContainerInfo, ContainerState

__all__ = ["ContainerView", "PodPhase", "pod_phase", "pod_status", "rfc3339"]

RUNTIME_SCHEME = "containerd://"


class PodPhase:
    """The phases of a pod (Kubernetes' strings)."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    TERMINAL = frozenset({SUCCEEDED, FAILED})


@dataclass(frozen=True)
class ContainerView:
    """What Edged knows of one spec container: its latest CRI container, the one before, why it waits."""

    name: str
    image: str
    current: ContainerInfo | None = None
    previous: ContainerInfo | None = None
    waiting: tuple[str, str] | None = None
    """(reason, message) when the container is not running for a reason Edged decided."""
    ready: bool = False
    started: bool = True
    """False while a startup probe has not passed."""
    init: bool = False
    """One of ``spec.initContainers``: reported in ``initContainerStatuses``, ready once it succeeded."""
    sidecar: bool = False
    """An init container with ``restartPolicy: Always``: it keeps running beside the app containers."""

    @property
    def init_done(self) -> bool:
        """For an init container: whether the next one may start (succeeded; a sidecar: running, started)."""
        if self.sidecar:
            return self.current is not None and self.current.state == ContainerState.RUNNING and self.started
        return self.ready


def rfc3339(moment: datetime) -> str:
    """A time as Kubernetes writes it (second precision, UTC, ``Z``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _terminated(info: ContainerInfo) -> dict[str, Any]:
    state: dict[str, Any] = {
        "exitCode": info.exit_code if info.exit_code is not None else 0,
        "reason": info.reason or ("Completed" if info.exit_code == 0 else "Error"),
        "containerID": RUNTIME_SCHEME + info.id,
    }
    if info.message:
        state["message"] = info.message
    if info.started_at is not None:
        state["startedAt"] = rfc3339(info.started_at)
    if info.finished_at is not None:
        state["finishedAt"] = rfc3339(info.finished_at)
    return {"terminated": state}


def _waiting(reason: str, message: str) -> dict[str, Any]:
    return {"waiting": {"reason": reason, **({"message": message} if message else {})}}


def _container_status(view: ContainerView) -> dict[str, Any]:
    current, previous = view.current, view.previous
    last_state: dict[str, Any] = {}
    if previous is not None and previous.state == ContainerState.EXITED:
        last_state = _terminated(previous)
    state: dict[str, Any]
    if current is None:
        reason, message = view.waiting or ("ContainerCreating", "")
        state = _waiting(reason, message)
    elif current.state == ContainerState.RUNNING:
        started = current.started_at or current.created_at
        state = {"running": {"startedAt": rfc3339(started)}}
    elif current.state == ContainerState.EXITED and view.waiting is not None:
        state, last_state = _waiting(*view.waiting), _terminated(current)
    elif current.state == ContainerState.EXITED:
        state = _terminated(current)
    else:
        state = _waiting("ContainerCreating", "")
    running = "running" in state
    status: dict[str, Any] = {
        "name": view.name,
        "image": view.image,
        "imageID": current.image_ref if current is not None else "",
        "ready": view.ready if view.init else running and view.ready,
        "started": running and view.started,
        "restartCount": current.restart_count if current is not None else 0,
        "state": state,
        "lastState": last_state,
    }
    if current is not None:
        status["containerID"] = RUNTIME_SCHEME + current.id
    return status


def _phase(statuses: Sequence[Mapping[str, Any]], restart_policy: str) -> str:
    waiting = running = stopped = succeeded = 0
    for status in statuses:
        state, last = status["state"], status["lastState"]
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            succeeded += state["terminated"]["exitCode"] == 0
        elif "terminated" in last:
            stopped += 1
            succeeded += last["terminated"]["exitCode"] == 0
        else:
            waiting += 1
    if waiting:
        return PodPhase.PENDING
    if running:
        return PodPhase.RUNNING
    if stopped:
        if restart_policy == "Always":
            return PodPhase.RUNNING
        if stopped == succeeded:
            return PodPhase.SUCCEEDED
        if restart_policy == "Never":
            return PodPhase.FAILED
        return PodPhase.RUNNING
    return PodPhase.PENDING


def _init_failed(containers: Sequence[ContainerView], restart_policy: str) -> bool:
    """An init container failed and will not run again (``restartPolicy: Never``)."""
    return restart_policy == "Never" and any(
        view.init
        and not view.sidecar
        and view.current is not None
        and view.current.state == ContainerState.EXITED
        and view.current.exit_code != 0
        for view in containers
    )


def _phase_of(containers: Sequence[ContainerView], restart_policy: str) -> str:
    if _init_failed(containers, restart_policy):
        return PodPhase.FAILED
    if any(view.init and not view.init_done for view in containers):
        return PodPhase.PENDING
    apps = [_container_status(view) for view in containers if not view.init]
    return _phase(apps, restart_policy)


def pod_phase(pod: Mapping[str, Any], containers: Sequence[ContainerView]) -> str:
    """The phase ``pod`` is in with these containers (kubelet's rules; see the module docstring)."""
    return _phase_of(containers, str((pod.get("spec") or {}).get("restartPolicy", "Always")))


def _condition(
    kind: str,
    value: bool,
    previous: Mapping[str, Mapping[str, Any]],
    now: str,
    reason: str = "",
    message: str = "",
) -> dict[str, Any]:
    status = "True" if value else "False"
    before = previous.get(kind)
    since = before.get("lastTransitionTime", now) if before and before.get("status") == status else now
    condition = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": since}
    if reason:
        condition["reason"] = reason
    if message:
        condition["message"] = message
    return condition


def pod_status(
    pod: Mapping[str, Any],
    containers: Sequence[ContainerView],
    *,
    pod_ip: str,
    host_ip: str,
    start_time: datetime | None,
    previous: Mapping[str, Any] | None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The pod's v1 PodStatus as JSON. ``previous`` is the status reported before (its phase stays once
    terminal, and its conditions' transition times carry over); ``now`` stamps new transitions."""
    spec = pod.get("spec") or {}
    stamp = rfc3339(now or datetime.now(UTC))
    statuses = [_container_status(view) for view in containers if not view.init]
    init_statuses = [_container_status(view) for view in containers if view.init]
    previous = previous or {}
    phase = _phase_of(containers, str(spec.get("restartPolicy", "Always")))
    if previous.get("phase") in PodPhase.TERMINAL:
        phase = previous["phase"]  # a pod never leaves a terminal phase
    unready = [status["name"] for status in statuses if not status["ready"]]
    before = {condition["type"]: condition for condition in previous.get("conditions") or []}
    reason = "PodCompleted" if phase in PodPhase.TERMINAL else "ContainersNotReady" if unready else ""
    message = f"containers with unready status: [{' '.join(unready)}]" if unready else ""
    ready = not unready and phase == PodPhase.RUNNING
    incomplete = [view.name for view in containers if view.init and not view.init_done]
    initialized = (
        _condition("Initialized", True, before, stamp)
        if not incomplete
        else _condition(
            "Initialized",
            False,
            before,
            stamp,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(incomplete)}]",
        )
    )
    conditions = [
        _condition("PodScheduled", True, before, stamp),
        initialized,
        _condition("ContainersReady", ready, before, stamp, *((reason, message) if not ready else ())),
        _condition("Ready", ready, before, stamp, *((reason, message) if not ready else ())),
    ]
    status: dict[str, Any] = {"phase": phase, "conditions": conditions, "containerStatuses": statuses}
    if init_statuses:
        status["initContainerStatuses"] = init_statuses
    if host_ip:
        status["hostIP"] = host_ip
        status["hostIPs"] = [{"ip": host_ip}]
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    if start_time is not None:
        status["startTime"] = rfc3339(start_time)
    return status

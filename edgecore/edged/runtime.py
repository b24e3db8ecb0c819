"""Edged's container runtime client: containerd through CRI (``runtime.v1``), as kubelet and KubeEdge do.

Why CRI and not containerd's own API: a pod sandbox gives a pod its shared network / IPC / PID namespaces,
its cgroup and (with CNI) its IP in one call; container statuses (created / running / exited, exit code,
reason, start and finish times) map one to one onto Kubernetes' ``containerStatuses``; ``ExecSync`` is the
exec probe; and the same client works unchanged with any CRI runtime (CRI-O, ...). Pods with
``hostNetwork`` need nothing more; pods on the pod network need CNI plugins and a CNI config on the node
(Debian: ``containernetworking-plugins``), as with kubelet.

The protobuf messages are a generated subset of the CRI API (``edgecore/edged/cri``); calls go through
``grpc.aio`` on the event loop, with a deadline each. gRPC errors are translated where they enter:
:class:`RuntimeUnavailableError` (nothing answers: retry later), :class:`RuntimeNotFoundError` (the object
is gone), :class:`RuntimeCallError` (any other refusal), each counted in ``edgetwin_cri_errors_total``.
Image archives are imported with ``ctr`` (see :mod:`edgecore.edged.images`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import grpc
from google.protobuf.message import Message
from prometheus_client import CollectorRegistry

from edgecore.edged.cgroups import remove_pod_cgroup
from edgecore.edged.cri import runtime_v1_pb2 as cri
from edgecore.edged.images import CRI_NAMESPACE, import_archive
from edgecore.edged.metrics import RuntimeMetrics
from edgecore.edged.models import (
    ContainerInfo,
    ContainerState,
    ExecResult,
    Mount,
    SandboxInfo,
    SandboxState,
    from_nanoseconds,
)
from edgecore.edged.specs import (
    CONTAINER_NAME_LABEL,
    LOG_DIRECTORY_ANNOTATION,
    MANAGED_LABEL,
    POD_NAME_LABEL,
    POD_NAMESPACE_LABEL,
    POD_UID_LABEL,
    RESTART_COUNT_ANNOTATION,
    container_config,
    container_log_path,
    sandbox_config,
)
from edgecore.errors import ImageImportError, RuntimeCallError, RuntimeNotFoundError, RuntimeUnavailableError

__all__ = ["DEFAULT_ADDRESS", "ContainerRuntime"]

DEFAULT_ADDRESS = "unix:///run/containerd/containerd.sock"
DEFAULT_CGROUP_PARENT = "/edgetwin"

logger = logging.getLogger(__name__)

Response = TypeVar("Response", bound=Message)

_CONTAINER_STATES = {
    cri.CONTAINER_CREATED: ContainerState.CREATED,
    cri.CONTAINER_RUNNING: ContainerState.RUNNING,
    cri.CONTAINER_EXITED: ContainerState.EXITED,
    cri.CONTAINER_UNKNOWN: ContainerState.UNKNOWN,
}
_EPOCH = datetime.fromtimestamp(0, tz=UTC)


class ContainerRuntime:
    """An async CRI client for one runtime endpoint (containerd's socket by default).

    ``timeout`` is the deadline of each call (calls that wait on the container, such as a stop with a grace
    period or an exec, get that on top); ``cgroup_parent`` is the cgroup (cgroupfs syntax) under which each
    pod gets ``pod<uid>``; ``namespace`` is containerd's CRI namespace, where imported images must land.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        timeout: float = 10.0,
        cgroup_parent: str = DEFAULT_CGROUP_PARENT,
        namespace: str = CRI_NAMESPACE,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.address = address if address.startswith("unix://") else f"unix://{address}"
        self.timeout = timeout
        self.cgroup_parent = cgroup_parent
        self.namespace = namespace
        self._metrics = RuntimeMetrics.for_registry(registry)
        self._channel: Any = None
        self._channel_loop: asyncio.AbstractEventLoop | None = None
        # The config each sandbox was created with: CreateContainer sends it along, as CRI asks.
        self._sandboxes: dict[str, cri.PodSandboxConfig] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the gRPC channel (a later call opens a new one)."""
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()

    # -- plumbing ---------------------------------------------------------------------------------------

    def _open_channel(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._channel is None or self._channel_loop is not loop:
            # A grpc.aio channel belongs to the loop that made it: a client reused from another loop (a
            # restarted module, a test) gets a fresh one.
            self._channel = grpc.aio.insecure_channel(self.address)
            self._channel_loop = loop
        return self._channel

    async def _call(
        self,
        service: str,
        method: str,
        request: Message,
        response_type: type[Response],
        *,
        timeout: float | None = None,
    ) -> Response:
        call = self._open_channel().unary_unary(
            f"/runtime.v1.{service}/{method}",
            request_serializer=type(request).SerializeToString,
            response_deserializer=response_type.FromString,
        )
        self._metrics.calls.labels(method=method).inc()
        try:
            response: Response = await call(request, timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._translate(method, exc) from exc
        return response

    def _translate(self, method: str, exc: grpc.aio.AioRpcError) -> Exception:
        code: grpc.StatusCode = exc.code()
        detail = str(exc.details() or "")
        self._metrics.errors.labels(method=method, code=code.name).inc()
        extra = {"method": method, "code": code.name, "detail": detail, "address": self.address}
        if code == grpc.StatusCode.NOT_FOUND:
            logger.debug("CRI object not found", extra=extra)
            return RuntimeNotFoundError(method, code.name, detail)
        logger.warning("CRI call failed", extra=extra)
        if code == grpc.StatusCode.UNAVAILABLE:
            return RuntimeUnavailableError(self.address, detail)
        return RuntimeCallError(method, code.name, detail)

    async def _runtime(
        self, method: str, request: Message, response_type: type[Response], *, timeout: float | None = None
    ) -> Response:
        return await self._call("RuntimeService", method, request, response_type, timeout=timeout)

    async def _images(self, method: str, request: Message, response_type: type[Response]) -> Response:
        return await self._call("ImageService", method, request, response_type)

    # -- runtime and images -----------------------------------------------------------------------------

    async def version(self) -> str:
        """The runtime's name and version, e.g. ``containerd 1.6.20~ds1``."""
        response = await self._runtime("Version", cri.VersionRequest(version="v1"), cri.VersionResponse)
        return f"{response.runtime_name} {response.runtime_version}"

    async def import_image(self, archive: Path, *, timeout: float = 600.0) -> list[str]:
        """Import an image archive (OCI layout or ``docker save`` tar); return the image references.

        Returns once the runtime's CRI side lists every imported image (it learns of them from containerd's
        events, a moment after ``ctr`` finishes); raises :class:`ImageImportError` when the import fails.
        """
        refs = await import_archive(archive, address=self.address, namespace=self.namespace, timeout=timeout)
        if self.namespace != CRI_NAMESPACE:
            return refs  # not the CRI plugin's namespace: it will never list them
        deadline = asyncio.get_running_loop().time() + self.timeout
        for ref in refs:
            while not await self.has_image(ref):
                if asyncio.get_running_loop().time() > deadline:
                    raise ImageImportError(archive, f"{ref} was imported but the runtime does not list it")
                await asyncio.sleep(0.05)
        return refs

    async def pull_image(self, image: str, *, username: str = "", password: str = "") -> str:
        """Pull ``image`` from its registry (credentials optional); return the image reference pulled."""
        request = cri.PullImageRequest(
            image=cri.ImageSpec(image=image), auth=cri.AuthConfig(username=username, password=password)
        )
        response = await self._images("PullImage", request, cri.PullImageResponse)
        return response.image_ref

    async def has_image(self, image: str) -> bool:
        """Whether the runtime has ``image`` (a reference or an image id) locally."""
        request = cri.ImageStatusRequest(image=cri.ImageSpec(image=image))
        response = await self._images("ImageStatus", request, cri.ImageStatusResponse)
        return response.HasField("image")

    async def list_images(self) -> list[str]:
        """The references (repo tags) of every image the runtime has, sorted."""
        response = await self._images("ListImages", cri.ListImagesRequest(), cri.ListImagesResponse)
        return sorted({tag for image in response.images for tag in image.repo_tags})

    async def remove_image(self, image: str) -> None:
        """Remove ``image`` (idempotent)."""
        request = cri.RemoveImageRequest(image=cri.ImageSpec(image=image))
        await self._images("RemoveImage", request, cri.RemoveImageResponse)

    # -- pod sandboxes ----------------------------------------------------------------------------------

    async def run_pod_sandbox(
        self, pod: Mapping[str, Any], *, host_network: bool, log_dir: Path, attempt: int = 0
    ) -> str:
        """Create and start ``pod``'s sandbox (namespaces, pod cgroup, network); return its id.

        ``log_dir`` is the pod's log directory (see :func:`edgecore.edged.pod_log_dir`); container log
        paths are relative to it. ``attempt`` counts the sandboxes made for this pod before.
        """
        config = sandbox_config(
            pod, host_network=host_network, log_dir=log_dir, cgroup_parent=self.cgroup_parent, attempt=attempt
        )
        await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
        response = await self._runtime(
            "RunPodSandbox", cri.RunPodSandboxRequest(config=config), cri.RunPodSandboxResponse
        )
        self._sandboxes[response.pod_sandbox_id] = config
        logger.info(
            "pod sandbox running",
            extra={
                "sandbox": response.pod_sandbox_id,
                "pod": f"{config.metadata.namespace}/{config.metadata.name}",
                "host_network": host_network,
            },
        )
        return response.pod_sandbox_id

    async def stop_pod_sandbox(self, sandbox_id: str) -> None:
        """Stop the sandbox and every container in it (their processes are killed)."""
        request = cri.StopPodSandboxRequest(pod_sandbox_id=sandbox_id)
        await self._runtime("StopPodSandbox", request, cri.StopPodSandboxResponse)

    async def remove_pod_sandbox(self, sandbox_id: str) -> None:
        """Remove the sandbox and its containers (idempotent), then the pod's cgroup."""
        try:
            uid = (await self.pod_sandbox_status(sandbox_id)).pod_uid
        except RuntimeNotFoundError:
            uid = ""
        request = cri.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id)
        await self._runtime("RemovePodSandbox", request, cri.RemovePodSandboxResponse)
        self._sandboxes.pop(sandbox_id, None)
        if uid:  # left in place while another sandbox of the pod still has its cgroup in there
            await asyncio.to_thread(remove_pod_cgroup, f"{self.cgroup_parent.rstrip('/')}/pod{uid}")

    async def pod_sandbox_status(self, sandbox_id: str) -> SandboxInfo:
        """The sandbox's state, metadata, labels and IP; :class:`RuntimeNotFoundError` when it is gone."""
        request = cri.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id)
        response = await self._runtime("PodSandboxStatus", request, cri.PodSandboxStatusResponse)
        status = response.status
        return SandboxInfo(
            id=status.id,
            pod_name=status.metadata.name,
            pod_namespace=status.metadata.namespace,
            pod_uid=status.metadata.uid,
            attempt=status.metadata.attempt,
            state=SandboxState.READY if status.state == cri.SANDBOX_READY else SandboxState.NOT_READY,
            created_at=from_nanoseconds(status.created_at) or _EPOCH,
            labels=dict(status.labels),
            annotations=dict(status.annotations),
            ip=status.network.ip,
            host_network=status.linux.namespaces.options.network == cri.NODE,
        )

    async def list_pod_sandboxes(self, labels: Mapping[str, str] | None = None) -> list[SandboxInfo]:
        """Edged's sandboxes (those labelled ``edgetwin.io/managed``) matching every label of ``labels``.

        A new client finds what an earlier Edged started, e.g. by ``{"io.kubernetes.pod.uid": uid}``.
        """
        selector = {**(labels or {}), MANAGED_LABEL: "true"}
        request = cri.ListPodSandboxRequest(filter=cri.PodSandboxFilter(label_selector=selector))
        response = await self._runtime("ListPodSandbox", request, cri.ListPodSandboxResponse)
        found = await asyncio.gather(*(self._sandbox_or_none(item.id) for item in response.items))
        return sorted((info for info in found if info is not None), key=lambda info: info.created_at)

    async def _sandbox_or_none(self, sandbox_id: str) -> SandboxInfo | None:
        try:
            return await self.pod_sandbox_status(sandbox_id)
        except RuntimeNotFoundError:
            return None  # removed between the list and the status call

    # -- containers -------------------------------------------------------------------------------------

    async def create_container(
        self,
        sandbox_id: str,
        pod: Mapping[str, Any],
        container: Mapping[str, Any],
        *,
        mounts: Sequence[Mount] = (),
        env: Mapping[str, str] | None = None,
        log_path: str | None = None,
        restart_count: int = 0,
    ) -> str:
        """Create (not start) ``container`` of ``pod`` in the sandbox; return the container id.

        ``env`` is the final environment (references resolved); ``log_path`` is relative to the pod's log
        directory (default ``<name>/<restart_count>.log``, as kubelet). The image must be present.
        """
        sandbox = self._sandboxes.get(sandbox_id) or await self._adopted_sandbox_config(sandbox_id)
        name = str(container.get("name", ""))
        config = container_config(
            pod,
            container,
            sandbox=sandbox,
            mounts=mounts,
            env=env or {},
            log_path=log_path or container_log_path(name, restart_count),
            restart_count=restart_count,
        )
        request = cri.CreateContainerRequest(pod_sandbox_id=sandbox_id, config=config, sandbox_config=sandbox)
        response = await self._runtime("CreateContainer", request, cri.CreateContainerResponse)
        logger.info(
            "container created",
            extra={"container": response.container_id, "sandbox": sandbox_id, "container_name": name},
        )
        return response.container_id

    async def _adopted_sandbox_config(self, sandbox_id: str) -> cri.PodSandboxConfig:
        """The config of a sandbox an earlier client made, rebuilt from what the runtime reports of it."""
        request = cri.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id)
        status = (await self._runtime("PodSandboxStatus", request, cri.PodSandboxStatusResponse)).status
        config = cri.PodSandboxConfig(
            metadata=status.metadata,
            log_directory=status.annotations.get(LOG_DIRECTORY_ANNOTATION, ""),
            labels=dict(status.labels),
            annotations=dict(status.annotations),
            linux=cri.LinuxPodSandboxConfig(
                cgroup_parent=f"{self.cgroup_parent.rstrip('/')}/pod{status.metadata.uid}",
                security_context=cri.LinuxSandboxSecurityContext(
                    namespace_options=status.linux.namespaces.options
                ),
            ),
        )
        self._sandboxes[sandbox_id] = config
        return config

    async def start_container(self, container_id: str) -> None:
        """Start a created container."""
        request = cri.StartContainerRequest(container_id=container_id)
        await self._runtime("StartContainer", request, cri.StartContainerResponse)

    async def stop_container(self, container_id: str, timeout: int) -> None:
        """Stop a container: SIGTERM, then SIGKILL after ``timeout`` seconds (idempotent)."""
        request = cri.StopContainerRequest(container_id=container_id, timeout=timeout)
        await self._runtime(
            "StopContainer", request, cri.StopContainerResponse, timeout=self.timeout + timeout
        )

    async def remove_container(self, container_id: str) -> None:
        """Remove a container (a running one is killed first; idempotent)."""
        request = cri.RemoveContainerRequest(container_id=container_id)
        await self._runtime("RemoveContainer", request, cri.RemoveContainerResponse)

    async def container_status(self, container_id: str) -> ContainerInfo:
        """A container's state, exit code, times, restart count and labels; :class:`RuntimeNotFoundError`
        when it is gone."""
        request = cri.ListContainersRequest(filter=cri.ContainerFilter(id=container_id))
        response = await self._runtime("ListContainers", request, cri.ListContainersResponse)
        found = [await self._container_or_none(item) for item in response.containers]
        if not found or found[0] is None:
            raise RuntimeNotFoundError("ContainerStatus", "NOT_FOUND", f"container {container_id} not found")
        return found[0]

    async def container_pid(self, container_id: str) -> int | None:
        """The host pid of the container's main process while it runs (``None`` otherwise)."""
        request = cri.ContainerStatusRequest(container_id=container_id, verbose=True)
        response = await self._runtime("ContainerStatus", request, cri.ContainerStatusResponse)
        try:
            pid = json.loads(response.info.get("info", "{}")).get("pid")
        except ValueError:
            return None
        return pid if isinstance(pid, int) and pid > 0 else None

    async def list_containers(
        self, sandbox_id: str | None = None, labels: Mapping[str, str] | None = None
    ) -> list[ContainerInfo]:
        """Edged's containers (of one sandbox, when given) with their full status, oldest first."""
        selector = {**(labels or {}), MANAGED_LABEL: "true"}
        request = cri.ListContainersRequest(
            filter=cri.ContainerFilter(pod_sandbox_id=sandbox_id or "", label_selector=selector)
        )
        response = await self._runtime("ListContainers", request, cri.ListContainersResponse)
        found = await asyncio.gather(*(self._container_or_none(item) for item in response.containers))
        return sorted((info for info in found if info is not None), key=lambda info: info.created_at)

    async def container_states(self) -> dict[str, tuple[str, ContainerState]]:
        """Every Edged container's pod uid and state, in one call (a cheap relist: no status call each)."""
        request = cri.ListContainersRequest(
            filter=cri.ContainerFilter(label_selector={MANAGED_LABEL: "true"})
        )
        response = await self._runtime("ListContainers", request, cri.ListContainersResponse)
        return {
            item.id: (
                item.labels.get(POD_UID_LABEL, ""),
                _CONTAINER_STATES.get(item.state, ContainerState.UNKNOWN),
            )
            for item in response.containers
        }

    async def _container_or_none(self, container: cri.Container) -> ContainerInfo | None:
        request = cri.ContainerStatusRequest(container_id=container.id)
        try:
            response = await self._runtime("ContainerStatus", request, cri.ContainerStatusResponse)
        except RuntimeNotFoundError:
            return None  # removed between the list and the status call
        return _container_info(response.status, sandbox_id=container.pod_sandbox_id)

    async def exec_sync(self, container_id: str, cmd: Sequence[str], timeout: float) -> ExecResult:
        """Run ``cmd`` in the container and wait for it (an exec probe); the runtime kills it after
        ``timeout`` seconds (a :class:`RuntimeCallError` with code ``DEADLINE_EXCEEDED`` then)."""
        request = cri.ExecSyncRequest(container_id=container_id, cmd=list(cmd), timeout=math.ceil(timeout))
        response = await self._runtime(
            "ExecSync", request, cri.ExecSyncResponse, timeout=self.timeout + math.ceil(timeout)
        )
        return ExecResult(exit_code=response.exit_code, stdout=response.stdout, stderr=response.stderr)


def _container_info(status: cri.ContainerStatus, *, sandbox_id: str) -> ContainerInfo:
    labels, annotations = dict(status.labels), dict(status.annotations)
    restart = annotations.get(RESTART_COUNT_ANNOTATION, "")
    finished = from_nanoseconds(status.finished_at)
    return ContainerInfo(
        id=status.id,
        sandbox_id=sandbox_id,
        name=labels.get(CONTAINER_NAME_LABEL, status.metadata.name),
        pod_name=labels.get(POD_NAME_LABEL, ""),
        pod_namespace=labels.get(POD_NAMESPACE_LABEL, ""),
        pod_uid=labels.get(POD_UID_LABEL, ""),
        image=status.image.image,
        image_ref=status.image_ref,
        state=_CONTAINER_STATES.get(status.state, ContainerState.UNKNOWN),
        restart_count=int(restart) if restart.isdigit() else status.metadata.attempt,
        created_at=from_nanoseconds(status.created_at) or _EPOCH,
        started_at=from_nanoseconds(status.started_at),
        finished_at=finished,
        exit_code=status.exit_code if finished is not None else None,
        reason=status.reason,
        message=status.message,
        log_path=status.log_path,
        labels=labels,
        annotations=annotations,
    )

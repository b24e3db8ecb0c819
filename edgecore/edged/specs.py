"""Kubernetes v1 Pod and Container dicts turned into CRI sandbox and container configs, as kubelet does.

Sandboxes and containers carry kubelet's labels (``io.kubernetes.pod.{name,namespace,uid}``,
``io.kubernetes.container.name``) plus ``edgetwin.io/managed``, and the restart count in kubelet's
``io.kubernetes.container.restartCount`` annotation and in the CRI attempt: an Edged that restarts finds
what runs for each pod by listing with these labels, instead of starting it a second time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgecore.edged.cri import runtime_v1_pb2 as cri
from edgecore.edged.models import Mount
from edgecore.edged.quantity import parse_quantity
from edgecore.errors import PodSpecError

__all__ = [
    "CONTAINER_NAME_LABEL",
    "LOG_DIRECTORY_ANNOTATION",
    "MANAGED_LABEL",
    "POD_NAMESPACE_LABEL",
    "POD_NAME_LABEL",
    "POD_UID_LABEL",
    "RESTART_COUNT_ANNOTATION",
    "container_config",
    "container_log_path",
    "pod_log_dir",
    "sandbox_config",
]

POD_NAME_LABEL = "io.kubernetes.pod.name"
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
POD_UID_LABEL = "io.kubernetes.pod.uid"
CONTAINER_NAME_LABEL = "io.kubernetes.container.name"
RESTART_COUNT_ANNOTATION = "io.kubernetes.container.restartCount"
IMAGE_ANNOTATION = "edgetwin.io/image"
"""The image as the pod spec names it (the runtime reports it normalised): a changed spec image restarts."""
LOG_DIRECTORY_ANNOTATION = "edgetwin.io/log-directory"
"""The sandbox's log directory, kept on the sandbox so that a restarted Edged can add containers to it."""
MANAGED_LABEL = "edgetwin.io/managed"
"""Set to ``"true"`` on everything Edged creates, so that it never touches other CRI clients' pods."""

CPU_PERIOD_US = 100_000
"""The CFS period kubelet uses; a CPU limit becomes a quota of this period."""
_MIN_CPU_QUOTA_US = 1_000
_MIN_CPU_SHARES = 2
_MAX_HOSTNAME = 63


def _meta(pod: Mapping[str, Any], key: str) -> str:
    value = (pod.get("metadata") or {}).get(key)
    if not isinstance(value, str) or not value:
        raise PodSpecError(f"metadata.{key}", value, "a pod needs a name, a namespace and a uid")
    return value


def pod_log_dir(root: Path, pod: Mapping[str, Any]) -> Path:
    """kubelet's per-pod log directory: ``<root>/<namespace>_<name>_<uid>``."""
    return root / f"{_meta(pod, 'namespace')}_{_meta(pod, 'name')}_{_meta(pod, 'uid')}"


def container_log_path(container_name: str, restart_count: int) -> str:
    """kubelet's container log file, relative to the pod's log directory: ``<name>/<restart>.log``."""
    return f"{container_name}/{restart_count}.log"


def _pod_labels(pod: Mapping[str, Any]) -> dict[str, str]:
    return {
        POD_NAME_LABEL: _meta(pod, "name"),
        POD_NAMESPACE_LABEL: _meta(pod, "namespace"),
        POD_UID_LABEL: _meta(pod, "uid"),
        MANAGED_LABEL: "true",
    }


def _string_map(value: object, field: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PodSpecError(field, value, "expected a map of strings")
    return {str(key): str(item) for key, item in value.items()}


def _port_mappings(spec: Mapping[str, Any]) -> list[cri.PortMapping]:
    protocols = {"TCP": cri.TCP, "UDP": cri.UDP, "SCTP": cri.SCTP}
    mappings = []
    for index, container in enumerate(spec.get("containers") or []):
        for port_index, port in enumerate(container.get("ports") or []):
            if not port.get("hostPort"):
                continue
            protocol = port.get("protocol", "TCP")
            if protocol not in protocols:
                field = f"spec.containers[{index}].ports[{port_index}].protocol"
                raise PodSpecError(field, protocol, "one of TCP, UDP, SCTP")
            mappings.append(
                cri.PortMapping(
                    protocol=protocols[protocol],
                    container_port=int(port["containerPort"]),
                    host_port=int(port["hostPort"]),
                    host_ip=port.get("hostIP", ""),
                )
            )
    return mappings


def _dns_config(spec: Mapping[str, Any]) -> cri.DNSConfig | None:
    dns = spec.get("dnsConfig")
    if not dns:
        return None  # the runtime gives the sandbox the node's resolv.conf
    options = [
        f"{option['name']}:{option['value']}" if option.get("value") else option["name"]
        for option in dns.get("options") or []
    ]
    return cri.DNSConfig(
        servers=dns.get("nameservers") or [], searches=dns.get("searches") or [], options=options
    )


def sandbox_config(
    pod: Mapping[str, Any],
    *,
    host_network: bool,
    log_dir: Path,
    cgroup_parent: str,
    attempt: int = 0,
) -> cri.PodSandboxConfig:
    """The CRI config of ``pod``'s sandbox: metadata, kubelet's labels, network / PID / IPC namespaces,
    hostname, DNS, host ports, and the pod cgroup ``<cgroup_parent>/pod<uid>`` its containers go in."""
    spec: Mapping[str, Any] = pod.get("spec") or {}
    name, uid = _meta(pod, "name"), _meta(pod, "uid")
    labels = _string_map((pod.get("metadata") or {}).get("labels"), "metadata.labels")
    annotations = _string_map((pod.get("metadata") or {}).get("annotations"), "metadata.annotations")
    security = spec.get("securityContext") or {}
    namespaces = cri.NamespaceOption(
        network=cri.NODE if host_network else cri.POD,
        pid=cri.NODE
        if spec.get("hostPID")
        else cri.POD
        if spec.get("shareProcessNamespace")
        else cri.CONTAINER,
        ipc=cri.NODE if spec.get("hostIPC") else cri.POD,
    )
    sandbox_security = cri.LinuxSandboxSecurityContext(
        namespace_options=namespaces,
        privileged=any(
            (container.get("securityContext") or {}).get("privileged")
            for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
        ),
        supplemental_groups=[int(group) for group in security.get("supplementalGroups") or []],
    )
    if security.get("runAsUser") is not None:
        sandbox_security.run_as_user.value = int(security["runAsUser"])
    if security.get("runAsGroup") is not None:
        sandbox_security.run_as_group.value = int(security["runAsGroup"])
    return cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(
            name=name, namespace=_meta(pod, "namespace"), uid=uid, attempt=attempt
        ),
        # With the node's network the sandbox keeps the node's hostname, as kubelet does.
        hostname="" if host_network else (spec.get("hostname") or name)[:_MAX_HOSTNAME],
        log_directory=str(log_dir),
        dns_config=_dns_config(spec),
        port_mappings=_port_mappings(spec),
        labels={**labels, **_pod_labels(pod)},
        annotations={**annotations, LOG_DIRECTORY_ANNOTATION: str(log_dir)},
        linux=cri.LinuxPodSandboxConfig(
            cgroup_parent=f"{cgroup_parent.rstrip('/')}/pod{uid}", security_context=sandbox_security
        ),
    )


def _quantity(value: object, field: str) -> float:
    reason = "not a Kubernetes quantity (e.g. 128Mi, 500m)"
    if not isinstance(value, str | int | float):
        raise PodSpecError(field, value, reason)
    try:
        return float(parse_quantity(value))
    except ValueError as exc:
        raise PodSpecError(field, value, reason) from exc


def _resources(container: Mapping[str, Any], field: str) -> cri.LinuxContainerResources:
    resources = container.get("resources") or {}
    limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
    result = cri.LinuxContainerResources()
    if "memory" in limits:
        result.memory_limit_in_bytes = math.ceil(_quantity(limits["memory"], f"{field}.limits.memory"))
    if "cpu" in limits:
        millicpu = math.ceil(_quantity(limits["cpu"], f"{field}.limits.cpu") * 1000)
        result.cpu_period = CPU_PERIOD_US
        result.cpu_quota = max(millicpu * CPU_PERIOD_US // 1000, _MIN_CPU_QUOTA_US)
    cpu_request = requests.get("cpu", limits.get("cpu"))
    if cpu_request is not None:
        millicpu = math.ceil(_quantity(cpu_request, f"{field}.requests.cpu") * 1000)
        result.cpu_shares = max(millicpu * 1024 // 1000, _MIN_CPU_SHARES)
    return result


def _container_security(
    container: Mapping[str, Any], pod_spec: Mapping[str, Any], namespaces: cri.NamespaceOption
) -> cri.LinuxContainerSecurityContext:
    security = container.get("securityContext") or {}
    pod_security = pod_spec.get("securityContext") or {}
    capabilities = security.get("capabilities") or {}
    result = cri.LinuxContainerSecurityContext(
        namespace_options=namespaces,
        privileged=bool(security.get("privileged")),
        readonly_rootfs=bool(security.get("readOnlyRootFilesystem")),
        no_new_privs=security.get("allowPrivilegeEscalation") is False,
        capabilities=cri.Capability(
            add_capabilities=capabilities.get("add") or [], drop_capabilities=capabilities.get("drop") or []
        ),
        supplemental_groups=[int(group) for group in pod_security.get("supplementalGroups") or []],
    )
    run_as_user = security.get("runAsUser", pod_security.get("runAsUser"))
    if run_as_user is not None:
        result.run_as_user.value = int(run_as_user)
    run_as_group = security.get("runAsGroup", pod_security.get("runAsGroup"))
    if run_as_group is not None:
        result.run_as_group.value = int(run_as_group)
    return result


def container_config(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    sandbox: cri.PodSandboxConfig,
    mounts: Sequence[Mount],
    env: Mapping[str, str],
    log_path: str,
    restart_count: int = 0,
) -> cri.ContainerConfig:
    """The CRI config of one of ``pod``'s containers, in the namespaces of its ``sandbox``.

    ``env`` is final (ConfigMap / Secret references already resolved by the caller); ``log_path`` is
    relative to the sandbox's log directory; resources become cgroup limits (memory bytes, CFS quota,
    shares).
    """
    spec: Mapping[str, Any] = pod.get("spec") or {}
    name = container.get("name")
    if not isinstance(name, str) or not name:
        raise PodSpecError("spec.containers[].name", name, "a container needs a name")
    field = f"spec.containers[name={name}]"
    image = container.get("image")
    if not isinstance(image, str) or not image:
        raise PodSpecError(f"{field}.image", image, "a container needs an image")
    sandbox_namespaces = sandbox.linux.security_context.namespace_options
    namespaces = cri.NamespaceOption(
        network=sandbox_namespaces.network, pid=sandbox_namespaces.pid, ipc=sandbox_namespaces.ipc
    )
    return cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name=name, attempt=restart_count),
        image=cri.ImageSpec(image=image),
        command=[str(part) for part in container.get("command") or []],
        args=[str(part) for part in container.get("args") or []],
        working_dir=container.get("workingDir", ""),
        envs=[cri.KeyValue(key=key, value=value) for key, value in env.items()],
        mounts=[
            cri.Mount(
                container_path=mount.container_path, host_path=mount.host_path, readonly=mount.read_only
            )
            for mount in mounts
        ],
        labels={**_pod_labels(pod), CONTAINER_NAME_LABEL: name},
        annotations={RESTART_COUNT_ANNOTATION: str(restart_count), IMAGE_ANNOTATION: image},
        log_path=log_path,
        stdin=bool(container.get("stdin")),
        stdin_once=bool(container.get("stdinOnce")),
        tty=bool(container.get("tty")),
        linux=cri.LinuxContainerConfig(
            resources=_resources(container, f"{field}.resources"),
            security_context=_container_security(container, spec, namespaces),
        ),
    )

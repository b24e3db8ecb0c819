"""The v1 Node an edge node announces to the cloud when its link comes up.

KubeEdge's edged builds the Node it registers from the machine and ``edgecore.yaml``; :class:`NodeInfo`
does the same for edgetwin: name (``modules.edged.hostnameOverride``), labels (the edge role labels
``node-role.kubernetes.io/edge`` and ``node-role.kubernetes.io/agent`` plus ``modules.edged.nodeLabels``),
taints (``modules.edged.tailoredKubeletConfig.registerWithTaints``), addresses (InternalIP = ``nodeIP``
or the address of the default route's interface, and Hostname), capacity = allocatable from the machine
(CPUs, memory from ``/proc/meminfo``, 110 pods as the kubelet's default, ephemeral storage of the
filesystem holding edgecore's data) and ``nodeInfo``.

``kubeletVersion`` is ``v<kubernetes>-edgetwin-v<edgetwin>`` (KubeEdge writes ``...-kubeedge-v<ver>``).
The Kubernetes version is the one the installed ``kubernetes`` client follows: client ``N.x`` is built
for Kubernetes ``1.N`` (client 37 -> ``v1.37.0``), the API edgetwin is written against.

cloudcore's NodeController creates or updates the Node from :meth:`NodeInfo.message` (see
``cloudcore.nodes``); the Ready condition is the cloud's business, so the announcement carries none.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import platform
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Self

from cloudsync import Group, Message, Operation
from edgecore.config import EdgeCoreConfig

__all__ = [
    "AGENT_ROLE_LABEL",
    "EDGE_ROLE_LABEL",
    "EDGE_TAINT",
    "NodeInfo",
    "kubelet_version",
    "kubernetes_version",
]

EDGE_ROLE_LABEL: Final = "node-role.kubernetes.io/edge"
AGENT_ROLE_LABEL: Final = "node-role.kubernetes.io/agent"
EDGE_TAINT: Final = {"key": EDGE_ROLE_LABEL, "value": "", "effect": "NoSchedule"}
MAX_PODS: Final = "110"
SOURCE: Final = "edged"

# Used when the kubernetes client is not installed (the edge does not need it) or has an old scheme.
_FALLBACK_KUBERNETES: Final = "v1.31.0"
# platform.machine() -> GOARCH, the names Kubernetes uses (kubernetes.io/arch).
_ARCHITECTURES: Final = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}
# An address of the TEST-NET-1 block (RFC 5737): connecting a UDP socket to it only asks the kernel for a
# route, no packet is sent.
_ROUTE_PROBE: Final = ("192.0.2.1", 9)


def kubernetes_version() -> str:
    """``v1.<N>.0`` for the installed ``kubernetes`` client ``N.x`` (the Kubernetes API it follows)."""
    try:
        major = int(importlib.metadata.version("kubernetes").split(".")[0])
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return _FALLBACK_KUBERNETES
    # Since client 17 the major version is Kubernetes' minor version (17.x for 1.17).
    return f"v1.{major}.0" if major >= 17 else _FALLBACK_KUBERNETES


def kubelet_version() -> str:
    """The Node's ``nodeInfo.kubeletVersion``: ``v<kubernetes>-edgetwin-v<edgetwin version>``."""
    try:
        ours = importlib.metadata.version("edgetwin")
    except importlib.metadata.PackageNotFoundError:
        ours = "0.0.0"
    return f"{kubernetes_version()}-edgetwin-v{ours}"


class NodeInfo:
    """What this edge node announces: a v1 Node (as a dict) read fresh from the machine each time.

    ``labels`` are added to the edge role labels; ``taints`` are ``{key, value, effect}`` mappings
    (:data:`EDGE_TAINT` for ``--with-edge-taint``); ``node_ip`` overrides the detected InternalIP;
    ``data_dir`` is where edgecore keeps its data (its filesystem's size is the ephemeral storage);
    ``container_runtime_version`` (e.g. ``containerd://1.6.20``) is left out when empty.
    """

    def __init__(
        self,
        name: str,
        *,
        namespace: str = "default",
        labels: Mapping[str, str] | None = None,
        taints: Sequence[Mapping[str, str]] = (),
        node_ip: str = "",
        data_dir: Path = Path("/var/lib/kubeedge"),
        container_runtime_version: str = "",
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.labels = {**(labels or {}), EDGE_ROLE_LABEL: "", AGENT_ROLE_LABEL: ""}
        self.taints = [
            {"key": taint["key"], "value": taint.get("value", ""), "effect": taint["effect"]}
            for taint in taints
        ]
        self.node_ip = node_ip
        self.data_dir = data_dir
        self.container_runtime_version = container_runtime_version

    @classmethod
    def from_config(cls, config: EdgeCoreConfig, *, container_runtime_version: str = "") -> Self:
        """The node of ``edgecore.yaml``: ``modules.edged`` names, labels, taints and IP; the data directory
        is the database's."""
        edged = config.modules.edged
        return cls(
            config.node_name,
            namespace=edged.register_node_namespace,
            labels=edged.node_labels,
            taints=[
                {"key": taint.key, "value": taint.value, "effect": taint.effect}
                for taint in edged.tailored_kubelet_config.register_with_taints
            ],
            node_ip=edged.node_ip,
            data_dir=config.database.path.parent,
            container_runtime_version=container_runtime_version,
        )

    @property
    def resource(self) -> str:
        """The resource of the announcement: ``<namespace>/node/<name>``."""
        return f"{self.namespace}/node/{self.name}"

    def node(self) -> dict[str, Any]:
        """The v1 Node as the API spells it (reads a few files of ``/proc``, ``/etc`` and a statvfs)."""
        capacity = {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{_memory_kib()}Ki",
            "pods": MAX_PODS,
            "ephemeral-storage": str(_filesystem_bytes(self.data_dir)),
        }
        node_info = {
            "machineID": _read_first_line(Path("/etc/machine-id")),
            "systemUUID": _read_first_line(Path("/sys/class/dmi/id/product_uuid")),
            "bootID": _read_first_line(Path("/proc/sys/kernel/random/boot_id")),
            "kernelVersion": platform.release(),
            "osImage": _os_image(),
            "containerRuntimeVersion": self.container_runtime_version,
            "kubeletVersion": kubelet_version(),
            "kubeProxyVersion": "",
            "operatingSystem": platform.system().lower(),
            "architecture": _ARCHITECTURES.get(platform.machine().lower(), platform.machine().lower()),
        }
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": dict(self.labels)},
            "spec": {"taints": [dict(taint) for taint in self.taints]},
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": self.node_ip or _primary_ip()},
                    {"type": "Hostname", "address": self.name},
                ],
                "capacity": capacity,
                "allocatable": dict(capacity),
                # Every field, even empty: the API requires them all (clients refuse a nodeInfo without).
                "nodeInfo": node_info,
            },
        }

    async def message(self, *, operation: Operation = Operation.INSERT) -> Message:
        """The announcement for the cloud (read off the event loop): ``insert`` of :attr:`resource`."""
        node = await asyncio.to_thread(self.node)
        return Message.new(
            source=SOURCE, group=Group.RESOURCE, operation=operation, resource=self.resource, content=node
        )


def _read_first_line(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip().splitlines()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return ""


def _memory_kib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    # No /proc (not Linux): the physical pages, where the platform tells them.
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024


def _filesystem_bytes(directory: Path) -> int:
    # The data directory may not exist yet (before the first start): its nearest existing ancestor.
    for candidate in (directory, *directory.parents):
        try:
            stats = os.statvfs(candidate)
        except OSError:
            continue
        return stats.f_blocks * stats.f_frsize
    return 0


def _os_image() -> str:
    for path in (Path("/etc/os-release"), Path("/usr/lib/os-release")):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for line in lines:
            key, _, value = line.partition("=")
            if key == "PRETTY_NAME":
                return value.strip().strip("\"'")
    return f"{platform.system()} {platform.release()}"


def _primary_ip() -> str:
    """The address of the interface holding the default route, as KubeEdge picks a node's IP."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(_ROUTE_PROBE)
            address: str = probe.getsockname()[0]
            return address
    except OSError:  # no route at all: the machine is alone
        return "127.0.0.1"

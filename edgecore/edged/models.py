"""What the container runtime reports and takes, as plain frozen values (no protobuf outside this package)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

__all__ = ["ContainerInfo", "ContainerState", "ExecResult", "Mount", "SandboxInfo", "SandboxState"]


class ContainerState(StrEnum):
    """A container's state as CRI reports it (maps to Kubernetes' waiting / running / terminated)."""

    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"
    UNKNOWN = "unknown"


class SandboxState(StrEnum):
    """Whether a pod sandbox is ready (its namespaces exist and its infra process runs)."""

    READY = "ready"
    NOT_READY = "notready"


@dataclass(frozen=True)
class Mount:
    """A host path mounted into a container (ConfigMap, Secret and emptyDir volumes are host directories)."""

    container_path: str
    host_path: str
    read_only: bool = False


@dataclass(frozen=True)
class SandboxInfo:
    """A pod sandbox: the pod it belongs to (from its metadata), its state, labels and IP."""

    id: str
    pod_name: str
    pod_namespace: str
    pod_uid: str
    attempt: int
    state: SandboxState
    created_at: datetime
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    ip: str = ""
    host_network: bool = False


@dataclass(frozen=True)
class ContainerInfo:
    """A container and its status: what kubelet reads to fill a Kubernetes ``containerStatuses`` entry.

    ``exit_code`` is ``None`` until the container has finished; ``restart_count`` comes from the
    ``io.kubernetes.container.restartCount`` annotation written at creation (the CRI attempt otherwise).
    """

    id: str
    sandbox_id: str
    name: str
    pod_name: str
    pod_namespace: str
    pod_uid: str
    image: str
    image_ref: str
    state: ContainerState
    restart_count: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    reason: str = ""
    message: str = ""
    log_path: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExecResult:
    """The outcome of a command run in a container (an exec probe): exit code and captured output."""

    exit_code: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        """Whether the command exited 0 (an exec probe's success)."""
        return self.exit_code == 0


def from_nanoseconds(value: int) -> datetime | None:
    """A CRI timestamp (nanoseconds since the epoch, 0 = unset) as an aware UTC datetime."""
    if value <= 0:
        return None
    return datetime.fromtimestamp(value / 1e9, tz=UTC)

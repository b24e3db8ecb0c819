"""Edged: the node's pods run in containerd through CRI.

:class:`Edged` is the supervised module (pod sync loop: adoption, restarts with crash-loop back-off, probes,
volumes, status reports; see :mod:`edgecore.edged.pods`); it builds on :class:`ContainerRuntime`, the CRI
client (see :mod:`edgecore.edged.runtime` for why CRI), image archive import and pod specs to CRI.
"""

from edgecore.edged.env import expand
from edgecore.edged.images import CRI_NAMESPACE, import_archive
from edgecore.edged.models import ContainerInfo, ContainerState, ExecResult, Mount, SandboxInfo, SandboxState
from edgecore.edged.pods import CRASH_LOOP_BACKOFF, Edged, pod_uses
from edgecore.edged.quantity import parse_quantity
from edgecore.edged.runtime import DEFAULT_ADDRESS, ContainerRuntime
from edgecore.edged.specs import (
    CONTAINER_NAME_LABEL,
    LOG_DIRECTORY_ANNOTATION,
    MANAGED_LABEL,
    POD_NAME_LABEL,
    POD_NAMESPACE_LABEL,
    POD_UID_LABEL,
    RESTART_COUNT_ANNOTATION,
    container_log_path,
    pod_log_dir,
)
from edgecore.edged.status import PodPhase, pod_status
from edgecore.edged.volumes import write_atomic
from edgecore.edged.worker import SOURCE as EDGED_SOURCE
from edgecore.errors import (
    ContainerRuntimeError,
    ImageImportError,
    PodConfigError,
    PodSpecError,
    RuntimeCallError,
    RuntimeNotFoundError,
    RuntimeUnavailableError,
)

__all__ = [
    "CONTAINER_NAME_LABEL",
    "CRASH_LOOP_BACKOFF",
    "CRI_NAMESPACE",
    "DEFAULT_ADDRESS",
    "EDGED_SOURCE",
    "LOG_DIRECTORY_ANNOTATION",
    "MANAGED_LABEL",
    "POD_NAMESPACE_LABEL",
    "POD_NAME_LABEL",
    "POD_UID_LABEL",
    "RESTART_COUNT_ANNOTATION",
    "ContainerInfo",
    "ContainerRuntime",
    "ContainerRuntimeError",
    "ContainerState",
    "Edged",
    "ExecResult",
    "ImageImportError",
    "Mount",
    "PodConfigError",
    "PodPhase",
    "PodSpecError",
    "RuntimeCallError",
    "RuntimeNotFoundError",
    "RuntimeUnavailableError",
    "SandboxInfo",
    "SandboxState",
    "container_log_path",
    "expand",
    "import_archive",
    "parse_quantity",
    "pod_log_dir",
    "pod_status",
    "pod_uses",
    "write_atomic",
]

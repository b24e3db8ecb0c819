"""The errors of the cloud daemon, rooted at :class:`CloudCoreError`."""

from __future__ import annotations

from collections.abc import Sequence

from device_models import EdgetwinError, ServeError


class CloudCoreError(EdgetwinError):
    """Base class of every error raised by ``cloudcore``."""


class SecretError(CloudCoreError):
    """The Secret ``namespace/name`` cannot be read, written or used: ``reason``."""

    def __init__(self, namespace: str, name: str, reason: str) -> None:
        super().__init__(f"secret {namespace}/{name}: {reason}")
        self.namespace = namespace
        self.name = name
        self.reason = reason


class SecretNotFoundError(SecretError):
    """The Secret ``namespace/name`` does not exist (cloudcore creates it on its first start)."""

    def __init__(self, namespace: str, name: str) -> None:
        super().__init__(namespace, name, "not found")

    def __str__(self) -> str:
        return f"start cloudcore first: secret {self.namespace}/{self.name} not found"


class DeviceControllerError(CloudCoreError):
    """Base class of the DeviceController's errors (Device / DeviceModel CRs <-> edge twins)."""


class CloudCoreConfigError(CloudCoreError):
    """``cloudcore.yaml`` is unreadable or invalid: ``issues`` has one ``field: problem`` line each.

    ``field`` is the dotted path of the first field at fault (KubeEdge's names); nothing is retried.
    """

    def __init__(self, source: str, field: str, issues: Sequence[str]) -> None:
        super().__init__(f"invalid cloudcore configuration {source}: {'; '.join(issues)}")
        self.source = source
        self.field = field
        self.issues = tuple(issues)


class KubeConfigError(CloudCoreError):
    """No usable connection settings for the Kubernetes API (kubeconfig, in-cluster, master): ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"cannot configure the Kubernetes API client: {reason}")
        self.reason = reason


class KubeUnavailableError(CloudCoreError):
    """The Kubernetes API could not be reached or timed out during ``operation``; retrying may help."""

    def __init__(self, operation: str, reason: str) -> None:
        super().__init__(f"{operation}: Kubernetes API unavailable: {reason}")
        self.operation = operation
        self.reason = reason


class KubeApiError(CloudCoreError):
    """The Kubernetes API refused ``operation`` with HTTP ``status`` and its ``reason`` / ``message``."""

    def __init__(self, operation: str, status: int, reason: str, message: str) -> None:
        super().__init__(f"{operation}: {status} {reason}: {message}")
        self.operation = operation
        self.status = status
        self.reason = reason
        self.message = message


class KubeNotFoundError(KubeApiError):
    """The object (or its namespace, or its API) does not exist: HTTP 404."""


class KubeConflictError(KubeApiError):
    """The object already exists or changed meanwhile: HTTP 409 (``reason`` AlreadyExists or Conflict)."""


class CrdNotServedError(CloudCoreError):
    """The CustomResourceDefinition ``name`` was installed but is not served after ``timeout`` seconds."""

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(f"CRD {name} is not Established and served after {timeout:g}s")
        self.name = name
        self.timeout = timeout


class DeviceMessageError(DeviceControllerError):
    """An edge->cloud device message cannot be read: ``resource`` and why (it is counted and dropped)."""

    def __init__(self, resource: str, reason: str) -> None:
        super().__init__(f"device message {resource!r}: {reason}")
        self.resource = resource
        self.reason = reason


class WatchExpiredError(KubeApiError):
    """A watch's resourceVersion is older than the API keeps (410 Gone): list again, then watch."""


class EdgeControllerError(CloudCoreError):
    """Base class of the EdgeController's errors (pods and what they need <-> edge nodes)."""


class PodMessageError(EdgeControllerError):
    """An edge->cloud pod message cannot be read: ``resource`` and why (it is counted and refused)."""

    def __init__(self, resource: str, reason: str) -> None:
        super().__init__(f"pod message {resource!r}: {reason}")
        self.resource = resource
        self.reason = reason


class StreamServeError(CloudCoreError, ServeError):
    """The stream port (``kubectl logs`` / ``exec``) cannot serve on ``address``: ``reason``."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__("the stream port", address, reason)

"""The errors of the edge daemon; each leaf carries what the user must fix or what failed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from device_models import EdgetwinError, ServeError

__all__ = [
    "ConfigIssue",
    "ContainerRuntimeError",
    "DevicesDirError",
    "EdgeCoreConfigError",
    "EdgeCoreError",
    "ImageImportError",
    "MetaMessageError",
    "MetaRevisionGoneError",
    "MetaSelectorError",
    "MetaServerError",
    "MetaStoreError",
    "PodConfigError",
    "PodSpecError",
    "RuntimeCallError",
    "RuntimeNotFoundError",
    "RuntimeUnavailableError",
]


class EdgeCoreError(EdgetwinError):
    """Root of the errors raised by ``edgecore``."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a configuration: the dotted field path (KubeEdge names), the value found, why.

    ``field`` is ``<file>`` or ``<document>`` for a problem with the whole file.
    """

    field: str
    value: object
    reason: str

    def __str__(self) -> str:
        if self.field.startswith("<"):  # about the whole file or document, not one field
            return self.reason
        return f"{self.field}: {self.value!r} is not valid: {self.reason}"


class EdgeCoreConfigError(EdgeCoreError):
    """The edgecore configuration is unreadable or invalid; nothing is retried, the user fixes the file."""

    def __init__(self, source: Path | str, issues: Sequence[ConfigIssue]) -> None:
        self.source = str(source)
        self.issues = tuple(issues)
        details = "; ".join(str(issue) for issue in self.issues)
        where = f" {self.source}" if self.source else ""
        super().__init__(f"invalid edgecore configuration{where}: {details}")

    @property
    def field(self) -> str:
        """The path of the first field at fault (e.g. ``modules.eventBus.mqttMode``)."""
        return self.issues[0].field

    @property
    def value(self) -> object:
        """The value found in the first field at fault."""
        return self.issues[0].value


class DevicesDirError(EdgeCoreError):
    """A file of the ``--devices`` directory cannot be turned into twins (the field names the spot).

    ``problems`` holds one line per problem found (file, object, field, value, reason) when there are
    several; the message is then those lines.
    """

    def __init__(self, path: Path, field: str, reason: str, *, problems: Sequence[str] = ()) -> None:
        where = f"{path}: {field}" if field else str(path)
        super().__init__("\n".join(problems) if problems else f"{where}: {reason}")
        self.path = path
        self.field = field
        self.reason = reason
        self.problems = tuple(problems)


class MetaMessageError(EdgeCoreError):
    """MetaManager refused a cloud message about ``resource`` (operation ``operation``): ``reason``.

    Re-sending the same message cannot succeed; the sender must fix it.
    """

    def __init__(self, resource: str, operation: str, reason: str) -> None:
        super().__init__(f"meta message {operation} {resource!r} refused: {reason}")
        self.resource = resource
        self.operation = operation
        self.reason = reason


class MetaStoreError(EdgeCoreError):
    """The ``meta`` table of ``path`` cannot be read or written (``operation``): ``reason``."""

    def __init__(self, path: Path, operation: str, reason: str) -> None:
        super().__init__(f"meta store {path}: {operation}: {reason}")
        self.path = path
        self.operation = operation
        self.reason = reason


class MetaRevisionGoneError(EdgeCoreError):
    """The change feed no longer holds the changes after ``revision`` (it keeps those after ``oldest``).

    A watcher resuming from there must list again (the Kubernetes API's ``410 Gone``).
    """

    def __init__(self, revision: str, oldest: int) -> None:
        super().__init__(f"too old resource version: {revision} (oldest kept: {oldest})")
        self.revision = revision
        self.oldest = oldest


class MetaServerError(EdgeCoreError, ServeError):
    """The MetaServer cannot serve on ``address``: ``reason``."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__("MetaServer", repr(address), reason)


class ContainerRuntimeError(EdgeCoreError):
    """Root of Edged's container runtime errors (the CRI client, image import, pod specs)."""


class RuntimeUnavailableError(ContainerRuntimeError):
    """The container runtime does not answer at ``address`` (not running, socket missing); retried later."""

    def __init__(self, address: str, detail: str) -> None:
        super().__init__(f"container runtime at {address} is unavailable: {detail}")
        self.address = address
        self.detail = detail


class RuntimeCallError(ContainerRuntimeError):
    """The runtime refused or failed a CRI call: ``method``, gRPC status ``code`` name and ``detail``."""

    def __init__(self, method: str, code: str, detail: str) -> None:
        super().__init__(f"CRI {method} failed ({code}): {detail}")
        self.method = method
        self.code = code
        self.detail = detail


class RuntimeNotFoundError(RuntimeCallError):
    """The sandbox, container or image a CRI call names does not exist (any more)."""


class ImageImportError(ContainerRuntimeError):
    """An image archive could not be imported into containerd; ``reason`` says why (ctr's own words)."""

    def __init__(self, archive: Path, reason: str) -> None:
        super().__init__(f"cannot import image archive {archive}: {reason}")
        self.archive = archive
        self.reason = reason


class PodConfigError(ContainerRuntimeError):
    """Pod ``pod`` refers to configuration the node does not hold (a ConfigMap, a Secret or one of their
    keys) at ``field``: ``message``. Edged retries once the object arrives.
    """

    def __init__(self, pod: str, field: str, message: str) -> None:
        super().__init__(f"pod {pod}: {field}: {message}")
        self.pod = pod
        self.field = field
        self.message = message


class PodSpecError(ContainerRuntimeError):
    """A pod or container spec cannot be turned into a CRI config: the ``field`` path and its ``value``."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        super().__init__(f"{field}: {value!r} is not valid: {reason}")
        self.field = field
        self.value = value
        self.reason = reason


class MetaSelectorError(EdgeCoreError):
    """A label or field selector given to the MetaServer cannot be read: ``reason`` (answered 400)."""

    def __init__(self, selector: str, reason: str) -> None:
        super().__init__(f"invalid selector {selector!r}: {reason}")
        self.selector = selector
        self.reason = reason

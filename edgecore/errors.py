"""The errors of the edge daemon; each leaf carries what the user must fix or what failed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from device_models import EdgetwinError

__all__ = ["ConfigIssue", "DevicesDirError", "EdgeCoreConfigError", "EdgeCoreError", "ModuleFailedError"]


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


class ModuleFailedError(EdgeCoreError):
    """A supervised module failed in a way that restarting cannot fix (e.g. a bad configuration)."""

    def __init__(self, module: str, error: BaseException) -> None:
        super().__init__(f"module {module} failed: {error}")
        self.module = module
        self.error = error

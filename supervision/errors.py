"""The supervisor's errors."""

from __future__ import annotations

from device_models import EdgetwinError


class SupervisionError(EdgetwinError):
    """Base class of the supervisor's errors."""


class ModuleFailedError(SupervisionError):
    """A supervised module failed in a way that restarting cannot fix (e.g. a bad configuration)."""

    def __init__(self, module: str, error: BaseException) -> None:
        super().__init__(f"module {module} failed: {error}")
        self.module = module
        self.error = error

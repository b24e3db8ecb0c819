"""Errors of the Kubernetes API test backends."""

from __future__ import annotations

from device_models import EdgetwinError


class KubeApiError(EdgetwinError):
    """Base class of the errors raised by :mod:`edgetwin.testing.kubeapi`."""


class BackendUnavailableError(KubeApiError):
    """The requested backend cannot run on this machine (a binary or a package is missing)."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"the {backend!r} Kubernetes API backend is unavailable: {reason}")
        self.backend = backend
        self.reason = reason


class KubectlError(KubeApiError, AssertionError):
    """``kubectl <command>`` exited non-zero; ``stderr`` holds what it said (a failed test shows it)."""

    def __init__(self, command: str, stderr: str) -> None:
        super().__init__(f"kubectl {command} failed: {stderr}")
        self.command = command
        self.stderr = stderr


class KubeApiStartError(KubeApiError):
    """A component (etcd, kube-apiserver, the emulator) did not start or become ready in time."""

    def __init__(self, component: str, reason: str, log_tail: str = "") -> None:
        message = f"{component} did not start: {reason}"
        if log_tail:
            message += f"\n--- last lines of the {component} log ---\n{log_tail}"
        super().__init__(message)
        self.component = component
        self.reason = reason
        self.log_tail = log_tail

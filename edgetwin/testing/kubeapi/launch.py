"""Choosing and starting a Kubernetes API backend: a real kube-apiserver when present, else the emulator."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

from edgetwin.testing.kubeapi.errors import BackendUnavailableError
from edgetwin.testing.kubeapi.handle import Backend, KubeApi
from edgetwin.testing.kubeapi.real import real_backend_available, run_real_api

BackendChoice = Literal["auto", "real", "emulator"]


def emulator_available() -> bool:
    """Whether kmock (the ``demo`` extra) is installed."""
    try:
        import kmock  # noqa: F401 - only probing that it imports
    except ImportError:
        return False
    return True


def available_backends() -> list[Backend]:
    """The backends this machine can run, real first."""
    found: list[Backend] = []
    if real_backend_available():
        found.append("real")
    if emulator_available():
        found.append("emulator")
    return found


def resolve_backend(backend: BackendChoice) -> Backend:
    """Turn ``auto`` into the best available backend; :class:`BackendUnavailableError` if there is none."""
    if backend == "auto":
        found = available_backends()
        if not found:
            raise BackendUnavailableError(
                "auto", "neither kube-apiserver + etcd nor kmock (pip install 'edgetwin[demo]') is installed"
            )
        return found[0]
    if backend == "real" and not real_backend_available():
        raise BackendUnavailableError(
            "real", "set KUBE_APISERVER or provide ../shared/bin/kube-apiserver, and etcd"
        )
    if backend == "emulator" and not emulator_available():
        raise BackendUnavailableError("emulator", "kmock is not installed (pip install 'edgetwin[demo]')")
    return backend


@asynccontextmanager
async def start_kube_api(
    backend: BackendChoice = "auto", workdir: Path | None = None
) -> AsyncIterator[KubeApi]:
    """Run a Kubernetes API for the duration of the ``async with`` block and yield its :class:`KubeApi`.

    ``workdir`` receives the kubeconfig, certificates, data and logs; without it a temporary directory is
    used and removed afterwards. Everything started is stopped on exit, also when the block raises.
    """
    chosen = resolve_backend(backend)
    with contextlib.ExitStack() as stack:
        directory = workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="edgetwin-kubeapi-"))
        )
        if chosen == "real":
            async with run_real_api(directory) as api:
                yield api
        else:
            # Imported here: kmock is an optional dependency, needed only by this backend.
            from edgetwin.testing.kubeapi.emulator import run_emulator

            async with run_emulator(directory) as api:
                yield api

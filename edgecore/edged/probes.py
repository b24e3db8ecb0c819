"""Readiness and liveness probes of a running container, as kubelet runs them (exec probes).

Each probe of a container is a task: it waits ``initialDelaySeconds`` after the container started, then
runs the probe's command in the container every ``periodSeconds`` (killed after ``timeoutSeconds``). A result
flips after ``successThreshold`` successes or ``failureThreshold`` failures in a row; each flip calls
``on_change`` so that the pod's worker re-syncs (status, or a restart for a failed liveness probe).
Readiness starts failed (a container is not ready until its probe passes); liveness starts passed.
``httpGet`` / ``tcpSocket`` / ``grpc`` probes are not run at the edge (logged once; they count as passing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from edgecore.edged.models import ExecResult
from edgecore.errors import ContainerRuntimeError, RuntimeNotFoundError

__all__ = ["ContainerProbes", "ProbeKind", "ProbeSpec"]

logger = logging.getLogger(__name__)


class ProbeKind(StrEnum):
    """Which probe of a container (the pod spec's key)."""

    READINESS = "readinessProbe"
    LIVENESS = "livenessProbe"


class Executor(Protocol):
    """What runs a probe's command in a container (the CRI runtime)."""

    async def exec_sync(self, container_id: str, cmd: list[str], timeout: float) -> ExecResult:
        """Run ``cmd`` in the container and wait for it."""
        ...


@dataclass(frozen=True)
class ProbeSpec:
    """A probe's command and timing (Kubernetes defaults where unset)."""

    command: tuple[str, ...]
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def of(cls, container: Mapping[str, Any], kind: ProbeKind) -> ProbeSpec | None:
        """The container's probe of that kind, or None when it has none (or one the edge does not run)."""
        probe = container.get(kind.value)
        if not probe:
            return None
        command = (probe.get("exec") or {}).get("command")
        if not command:
            logger.warning(
                "probe type not run at the edge; counted as passing",
                extra={"container_name": container.get("name"), "probe": kind.value},
            )
            return None
        return cls(
            command=tuple(str(part) for part in command),
            initial_delay=float(probe.get("initialDelaySeconds", 0)),
            period=float(probe.get("periodSeconds", 10)),
            timeout=float(probe.get("timeoutSeconds", 1)),
            success_threshold=int(probe.get("successThreshold", 1)),
            failure_threshold=int(probe.get("failureThreshold", 3)),
        )


class ContainerProbes:
    """The probes of one running container and their current results (:attr:`ready`, :attr:`live`)."""

    def __init__(
        self,
        executor: Executor,
        container_id: str,
        container: Mapping[str, Any],
        *,
        started_at: datetime | None,
        on_change: Callable[[], None],
    ) -> None:
        self.container_id = container_id
        self._executor = executor
        self._on_change = on_change
        self._started_at = started_at
        self._specs = {kind: ProbeSpec.of(container, kind) for kind in ProbeKind}
        self._results = {ProbeKind.READINESS: False, ProbeKind.LIVENESS: True}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def ready(self) -> bool:
        """Whether the readiness probe passes (True without one)."""
        return self._specs[ProbeKind.READINESS] is None or self._results[ProbeKind.READINESS]

    @property
    def live(self) -> bool:
        """Whether the liveness probe passes (True without one)."""
        return self._results[ProbeKind.LIVENESS]

    def start(self) -> None:
        """Start a task per probe the container has."""
        for kind, spec in self._specs.items():
            if spec is not None:
                name = f"probe-{kind.value}-{self.container_id[:12]}"
                self._tasks.append(asyncio.create_task(self._run(kind, spec), name=name))

    async def stop(self) -> None:
        """Cancel the probe tasks and wait for them."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, kind: ProbeKind, spec: ProbeSpec) -> None:
        started = self._started_at or datetime.now(UTC)
        elapsed = (datetime.now(UTC) - started).total_seconds()
        await asyncio.sleep(max(0.0, spec.initial_delay - elapsed))
        successes = failures = 0
        while True:
            passed = await self._probe(kind, spec)
            if passed is None:
                return  # the container is gone: its worker notices on its next sync
            successes, failures = (successes + 1, 0) if passed else (0, failures + 1)
            current = self._results[kind]
            if not current and successes >= spec.success_threshold:
                self._flip(kind, True)
            elif current and failures >= spec.failure_threshold:
                self._flip(kind, False)
            await asyncio.sleep(spec.period)

    async def _probe(self, kind: ProbeKind, spec: ProbeSpec) -> bool | None:
        try:
            result = await self._executor.exec_sync(self.container_id, list(spec.command), spec.timeout)
        except RuntimeNotFoundError:
            return None
        except ContainerRuntimeError as exc:  # a timeout, or the container stopping under the probe
            logger.debug(
                "probe did not run",
                extra={"container": self.container_id, "probe": kind.value, "error": str(exc)},
            )
            return False
        return result.ok

    def _flip(self, kind: ProbeKind, passed: bool) -> None:
        self._results[kind] = passed
        logger.info(
            "probe result changed",
            extra={"container": self.container_id, "probe": kind.value, "passed": passed},
        )
        self._on_change()

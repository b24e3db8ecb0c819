"""Startup, readiness and liveness probes of a running container, as kubelet runs them.

Each probe of a container is a task: it waits ``initialDelaySeconds`` after the container started, then
probes every ``periodSeconds`` (giving up after ``timeoutSeconds``). A result flips after ``successThreshold``
successes or ``failureThreshold`` failures in a row; each flip calls ``on_change`` so that the pod's worker
re-syncs (status, or a restart for a failed liveness probe). Readiness starts failed (a container is not ready
until its probe passes); liveness starts passed. A ``startupProbe`` holds the other two back until it passes
(the container is not ``started`` before) and restarts the container when it fails ``failureThreshold``
times.

The three handlers kubelet runs: ``exec`` (the command in the container, exit 0 passes), ``httpGet`` (a GET to
``host`` — the pod's IP by default — on ``port``, a number or a named container port; a status from 200 to 399
passes; HTTPS is not verified, as kubelet does not) and ``tcpSocket`` (a connection opens). ``grpc`` probes
are not run at the edge: logged once, they count as passing.
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

import aiohttp

from edgecore.edged.models import ExecResult
from edgecore.errors import ContainerRuntimeError, PodSpecError, RuntimeNotFoundError
from serving import join_host_port

__all__ = [
    "ContainerProbes",
    "ExecAction",
    "HttpGetAction",
    "ProbeKind",
    "ProbeSpec",
    "TcpSocketAction",
    "check_probes",
]

logger = logging.getLogger(__name__)


class ProbeKind(StrEnum):
    """Which probe of a container (the pod spec's key)."""

    STARTUP = "startupProbe"
    READINESS = "readinessProbe"
    LIVENESS = "livenessProbe"


class Executor(Protocol):
    """What runs a probe's command in a container (the CRI runtime)."""

    async def exec_sync(self, container_id: str, cmd: list[str], timeout: float) -> ExecResult:
        """Run ``cmd`` in the container and wait for it."""
        ...


@dataclass(frozen=True)
class ExecAction:
    """Run ``command`` in the container; exit code 0 passes."""

    command: tuple[str, ...]


@dataclass(frozen=True)
class HttpGetAction:
    """GET ``scheme://host:port/path`` with ``headers``; a status from 200 to 399 passes."""

    host: str
    port: int
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def url(self) -> str:
        """The URL probed."""
        path = self.path if self.path.startswith("/") else f"/{self.path}"
        return f"{self.scheme.lower()}://{join_host_port(self.host, self.port)}{path}"


@dataclass(frozen=True)
class TcpSocketAction:
    """Open a TCP connection to ``host:port``; a connection passes."""

    host: str
    port: int


ProbeAction = ExecAction | HttpGetAction | TcpSocketAction


@dataclass(frozen=True)
class ProbeSpec:
    """A probe's action and timing (Kubernetes defaults where unset)."""

    action: ProbeAction
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def of(cls, container: Mapping[str, Any], kind: ProbeKind, *, pod_ip: str) -> ProbeSpec | None:
        """The container's probe of that kind, or None when it has none (or one the edge does not run).

        Raises :class:`PodSpecError` for a probe that cannot run as written (a named port the container
        does not declare, a port out of range).
        """
        probe = container.get(kind.value)
        if not probe:
            return None
        action = _action(container, kind, probe, pod_ip)
        if action is None:
            logger.warning(
                "probe type not run at the edge; counted as passing",
                extra={"container_name": container.get("name"), "probe": kind.value},
            )
            return None
        return cls(
            action=action,
            initial_delay=float(probe.get("initialDelaySeconds", 0)),
            period=float(probe.get("periodSeconds", 10)),
            timeout=float(probe.get("timeoutSeconds", 1)),
            success_threshold=int(probe.get("successThreshold", 1)),
            failure_threshold=int(probe.get("failureThreshold", 3)),
        )


def _spec_or_none(container: Mapping[str, Any], kind: ProbeKind, pod_ip: str) -> ProbeSpec | None:
    # Checked before the container started (check_probes); one adopted from elsewhere is probed without it.
    try:
        return ProbeSpec.of(container, kind, pod_ip=pod_ip)
    except PodSpecError as exc:
        logger.warning("probe not run: %s", exc, extra={"container_name": container.get("name")})
        return None


def check_probes(container: Mapping[str, Any]) -> None:
    """Raise :class:`PodSpecError` if a probe of ``container`` cannot run as written."""
    for kind in ProbeKind:
        probe = container.get(kind.value)
        if probe:
            _action(container, kind, probe, pod_ip="")


def _action(
    container: Mapping[str, Any], kind: ProbeKind, probe: Mapping[str, Any], pod_ip: str
) -> ProbeAction | None:
    command = (probe.get("exec") or {}).get("command")
    if command:
        return ExecAction(tuple(str(part) for part in command))
    for handler in ("httpGet", "tcpSocket"):
        spec = probe.get(handler)
        if not isinstance(spec, Mapping):
            continue
        where = f"{container.get('name')}.{kind.value}.{handler}"
        host, port = str(spec.get("host") or pod_ip), _port(container, spec.get("port"), where)
        if handler == "tcpSocket":
            return TcpSocketAction(host, port)
        headers = tuple(
            (str(header.get("name")), str(header.get("value", "")))
            for header in spec.get("httpHeaders") or []
            if isinstance(header, Mapping) and header.get("name")
        )
        scheme = str(spec.get("scheme") or "HTTP").upper()
        if scheme not in ("HTTP", "HTTPS"):
            raise PodSpecError(f"{where}.scheme", scheme, "neither HTTP nor HTTPS")
        return HttpGetAction(host, port, str(spec.get("path") or "/"), scheme, headers)
    return None


def _port(container: Mapping[str, Any], port: Any, where: str) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, str) and not port.isdigit():
        for declared in container.get("ports") or []:
            if isinstance(declared, Mapping) and declared.get("name") == port:
                return int(declared.get("containerPort", 0))
        raise PodSpecError(f"{where}.port", port, "no container port has that name")
    try:
        number = int(port)
    except (TypeError, ValueError):
        number = 0
    if not 1 <= number <= 65535:
        raise PodSpecError(f"{where}.port", port, "a port is 1-65535 or the name of a container port")
    return number


class ContainerProbes:
    """The probes of one running container and their current results (:attr:`started`, :attr:`ready`,
    :attr:`failed`)."""

    def __init__(
        self,
        executor: Executor,
        container_id: str,
        container: Mapping[str, Any],
        *,
        pod_ip: str,
        started_at: datetime | None,
        on_change: Callable[[], None],
    ) -> None:
        self.container_id = container_id
        self._executor = executor
        self._on_change = on_change
        self._started_at = started_at
        self._specs = {kind: _spec_or_none(container, kind, pod_ip) for kind in ProbeKind}
        self._results = {
            ProbeKind.STARTUP: self._specs[ProbeKind.STARTUP] is None,
            ProbeKind.READINESS: False,
            ProbeKind.LIVENESS: True,
        }
        self._startup_failed = False
        self._started = asyncio.Event()
        if self._results[ProbeKind.STARTUP]:
            self._started.set()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def started(self) -> bool:
        """Whether the startup probe has passed (True without one); the other probes wait for it."""
        return self._results[ProbeKind.STARTUP]

    @property
    def ready(self) -> bool:
        """Whether the container has started and its readiness probe passes (True without one)."""
        return self.started and (
            self._specs[ProbeKind.READINESS] is None or self._results[ProbeKind.READINESS]
        )

    @property
    def failed(self) -> ProbeKind | None:
        """The probe that wants the container restarted: startup (failed for good) or liveness; None."""
        if self._startup_failed:
            return ProbeKind.STARTUP
        return None if self._results[ProbeKind.LIVENESS] else ProbeKind.LIVENESS

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
        if kind is not ProbeKind.STARTUP:
            await self._started.wait()  # kubelet runs neither readiness nor liveness before startup passed
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
            if kind is ProbeKind.STARTUP:
                if successes >= spec.success_threshold:
                    self._started.set()
                    self._flip(kind, True)
                    return  # passed once: never probed again for this container
                if failures >= spec.failure_threshold:
                    self._startup_failed = True
                    self._flip(kind, False)
                    return
            elif not current and successes >= spec.success_threshold:
                self._flip(kind, True)
            elif current and failures >= spec.failure_threshold:
                self._flip(kind, False)
            await asyncio.sleep(spec.period)

    async def _probe(self, kind: ProbeKind, spec: ProbeSpec) -> bool | None:
        action = spec.action
        if isinstance(action, HttpGetAction):
            return await _http_get(action, spec.timeout)
        if isinstance(action, TcpSocketAction):
            return await _tcp_connect(action, spec.timeout)
        try:
            result = await self._executor.exec_sync(self.container_id, list(action.command), spec.timeout)
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


async def _http_get(action: HttpGetAction, timeout: float) -> bool:
    # kubelet verifies no certificate; it follows redirects only to the same host, here none is followed.
    headers = {"User-Agent": "kube-probe/edgetwin", **dict(action.headers)}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(action.url, headers=headers, ssl=False, allow_redirects=False) as response,
        ):
            return 200 <= response.status < 400
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False


async def _tcp_connect(action: TcpSocketAction, timeout: float) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(action.host, action.port), timeout)
    except (TimeoutError, OSError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True

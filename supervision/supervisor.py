"""Supervision of a daemon's modules: ordered start, restart with exponential backoff, ordered stop.

Nothing here knows about edgecore's modules; cloudcore composes its own modules with the same class.
A module is anything with ``name``, ``start()``, ``stop()`` and ``wait()`` (:class:`Module`): ``wait()``
returns or raises once the running module has failed, which is how the supervisor learns of a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from eventbus import Backoff, BackoffPolicy
from supervision.errors import ModuleFailedError

__all__ = ["Module", "ModuleState", "ModuleStatus", "Supervisor"]

log = logging.getLogger(__name__)


class Module(Protocol):
    """What the supervisor runs. ``start`` returns once the module works; ``stop`` is idempotent."""

    @property
    def name(self) -> str:
        """Short name, used in logs, ``/healthz`` and the ``module`` label of metrics."""
        ...

    async def start(self) -> None:
        """Start the module; raise if it cannot start (the supervisor retries with backoff)."""
        ...

    async def stop(self) -> None:
        """Stop the module and release what it holds; also called after a failure."""
        ...

    async def wait(self) -> None:
        """Return or raise when the running module has failed (a crash, a dead child process)."""
        ...


class ModuleState(StrEnum):
    """Where a module is in its life."""

    PENDING = "pending"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass
class ModuleStatus:
    """The state of one module as ``/healthz`` shows it."""

    name: str
    state: ModuleState = ModuleState.PENDING
    restarts: int = 0
    last_error: str | None = None
    since: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view: state, restarts, last error, and since when (Unix seconds) the state holds."""
        return {
            "state": self.state.value,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "since": round(self.since, 3),
        }


class Supervisor:
    """Runs modules in order, restarts the ones that fail, stops them in reverse order.

    Restarts wait as ``backoff`` says (:class:`~eventbus.BackoffPolicy`); a module that ran at least the
    policy's ``maximum`` seconds before failing starts again from the shortest delay.

    ``fatal`` lists exception types that restarting cannot cure (a bad configuration): a module raising
    one fails for good, and :meth:`wait` raises :class:`ModuleFailedError` so the process exits loudly.
    """

    def __init__(
        self,
        modules: Sequence[Module],
        *,
        registry: CollectorRegistry | None = None,
        backoff: BackoffPolicy | None = None,
        fatal: tuple[type[BaseException], ...] = (),
    ) -> None:
        names = [module.name for module in modules]
        if len(set(names)) != len(names):
            raise ValueError(f"module names must be unique, got {names}")
        self._modules = list(modules)
        self._restart_policy = backoff or BackoffPolicy()
        self._fatal = fatal
        self._status = {module.name: ModuleStatus(module.name, since=time.time()) for module in modules}
        self._keepers: list[asyncio.Task[None]] = []
        self._failure: asyncio.Future[ModuleFailedError] | None = None
        registry = registry if registry is not None else CollectorRegistry()
        self._restarts = Counter(
            "edgetwin_module_restarts",
            "Restarts of a supervised module after it failed",
            ["module"],
            registry=registry,
        )
        self._up = Gauge(
            "edgetwin_module_up", "1 while a supervised module runs", ["module"], registry=registry
        )
        for name in names:
            self._restarts.labels(module=name)
            self._up.labels(module=name).set(0)

    @property
    def statuses(self) -> list[ModuleStatus]:
        """The status of every module, in start order."""
        return [self._status[module.name] for module in self._modules]

    @property
    def healthy(self) -> bool:
        """True when every module runs."""
        return all(status.state is ModuleState.RUNNING for status in self._status.values())

    async def start(self) -> None:
        """Start the modules one after the other, each retried with backoff until it runs.

        Returns when all run. A fatal error stops what was started and raises :class:`ModuleFailedError`.
        """
        loop = asyncio.get_running_loop()
        self._failure = loop.create_future()
        for module in self._modules:
            ready: asyncio.Future[None] = loop.create_future()
            keeper = asyncio.create_task(self._keep(module, ready), name=f"supervise-{module.name}")
            self._keepers.append(keeper)
            try:
                await ready
            except ModuleFailedError:
                await self.stop()
                raise

    async def wait(self) -> None:
        """Wait until a module fails for good, then raise its :class:`ModuleFailedError`."""
        if self._failure is None:
            raise RuntimeError("Supervisor.wait() called before start()")
        raise await asyncio.shield(self._failure)

    async def stop(self) -> None:
        """Stop supervising and stop every module in reverse start order; idempotent."""
        keepers, self._keepers = self._keepers, []
        for keeper in keepers:
            keeper.cancel()
        for keeper in keepers:
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        for module in reversed(self._modules):
            if self._status[module.name].state in (
                ModuleState.PENDING,
                ModuleState.STOPPED,
                ModuleState.FAILED,
            ):
                continue
            await self._stop_module(module)
            self._set(module, ModuleState.STOPPED)

    def _set(self, module: Module, state: ModuleState, error: BaseException | None = None) -> None:
        status = self._status[module.name]
        status.state = state
        status.since = time.time()
        if error is not None:
            status.last_error = f"{type(error).__name__}: {error}"
        self._up.labels(module=module.name).set(1 if state is ModuleState.RUNNING else 0)

    async def _stop_module(self, module: Module) -> None:
        try:
            await module.stop()
        except Exception:
            # A module that fails to stop must not keep the others from stopping.
            log.exception("module stop failed", extra={"component": module.name})

    async def _keep(self, module: Module, ready: asyncio.Future[None]) -> None:
        """Start ``module``, watch it, and restart it with backoff each time it fails.

        ``ready`` is resolved the first time the module runs, or fails with a fatal error.
        """
        try:
            await self._restart_loop(module, ready)
        finally:
            if not ready.done():  # stopped before it ever ran: start() must not wait forever
                ready.cancel()

    async def _restart_loop(self, module: Module, ready: asyncio.Future[None]) -> None:
        backoff = Backoff(self._restart_policy)
        while True:
            self._set(module, ModuleState.STARTING)
            started_at = time.monotonic()
            try:
                await module.start()
                self._set(module, ModuleState.RUNNING)
                if not ready.done():
                    ready.set_result(None)
                log.info("module running", extra={"component": module.name})
                await module.wait()
                raise RuntimeError("the module stopped by itself")  # noqa: TRY301 - same path as a crash
            except Exception as exc:  # noqa: BLE001 - any failure of a module is what supervision is for
                error = exc
            if isinstance(error, self._fatal):
                self._set(module, ModuleState.FAILED, error)
                log.error(
                    "module failed; restarting cannot fix this: %s", error, extra={"component": module.name}
                )
                await self._stop_module(module)
                failure = ModuleFailedError(module.name, error)
                if not ready.done():
                    ready.set_exception(failure)
                if self._failure is not None and not self._failure.done():
                    self._failure.set_result(failure)
                return
            if time.monotonic() - started_at >= self._restart_policy.maximum:
                backoff.reset()  # a long run: this failure is new, not the next one of a crash loop
            delay = backoff.next_delay()
            self._set(module, ModuleState.BACKOFF, error)
            log.warning(
                "module failed; restarting after backoff",
                exc_info=error,
                extra={"component": module.name, "delay_s": round(delay, 3), "attempt": backoff.attempts},
            )
            await self._stop_module(module)
            await asyncio.sleep(delay)
            self._status[module.name].restarts += 1
            self._restarts.labels(module=module.name).inc()

"""Running a daemon (edgecore, cloudcore) as a command: signals, ``/healthz``, ``/metrics``, a clean stop."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from edgetwin.observability import HealthReport, ObservabilityServer

__all__ = ["Daemon", "run_until_signalled"]

log = logging.getLogger(__name__)


class Daemon(Protocol):
    """What :func:`run_until_signalled` runs: :class:`edgecore.EdgeCore` and :class:`cloudcore.CloudCore`."""

    @property
    def healthy(self) -> bool:
        """True when every module runs."""
        ...

    def health_detail(self) -> dict[str, Any]:
        """What ``/healthz`` shows beside the status."""
        ...

    async def run(self, stop: asyncio.Event) -> None:
        """Start, run until ``stop`` is set, then stop; raises if a module fails for good."""
        ...


async def run_until_signalled(daemon: Daemon, *, healthz: str, registry: CollectorRegistry) -> None:
    """Run ``daemon`` until SIGTERM or SIGINT, serving ``/healthz`` and ``/metrics`` (of ``registry``) on
    ``healthz`` (``""``: not at all). Raises if a module fails for good (the command exits non-zero)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = None
    if healthz:

        def health() -> HealthReport:
            return HealthReport(daemon.healthy, daemon.health_detail())

        # Up before the modules, so a probe sees 503 with each module's state while the daemon starts.
        server = ObservabilityServer(healthz, registry=registry, health=health)
        await server.start()
        log.info("serving /healthz and /metrics", extra={"url": server.url})
    try:
        await daemon.run(stop)
    finally:
        if server is not None:
            await server.stop()

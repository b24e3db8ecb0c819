"""The local health and metrics endpoint every daemon and mapper serves: ``/healthz`` and ``/metrics``.

``/healthz`` answers 200 with a JSON body while the process is healthy and 503 with the same body when it
is not (a supervisor or a probe reads the body to see which part is down); ``/metrics`` is the Prometheus
text format of one :class:`prometheus_client.CollectorRegistry`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from device_models import ServeError
from serving import join_host_port, split_host_port, start_site

__all__ = ["HealthReport", "ObservabilityError", "ObservabilityServer", "new_registry", "parse_address"]


class ObservabilityError(ServeError):
    """The health/metrics endpoint cannot serve on ``address`` (bad form, or the port is taken)."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__("/healthz and /metrics", repr(address), reason)


@dataclass(frozen=True)
class HealthReport:
    """What ``/healthz`` answers: the status code follows ``healthy``; ``detail`` is the JSON body."""

    healthy: bool
    detail: Mapping[str, Any] = field(default_factory=dict)


def new_registry() -> CollectorRegistry:
    """A registry holding the process metrics (``process_resident_memory_bytes``, CPU, open fds)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def parse_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::1]:port`` for IPv6) into its parts; port 0 lets the OS choose."""
    parts = split_host_port(address)
    if parts is None:
        raise ObservabilityError(address, "expected host:port, e.g. 127.0.0.1:10256")
    return parts


class ObservabilityServer:
    """An aiohttp server on a local address serving ``/healthz`` from ``health()`` and ``/metrics``."""

    def __init__(
        self, address: str, *, registry: CollectorRegistry, health: Callable[[], HealthReport]
    ) -> None:
        self._address = address
        self._host, self._requested_port = parse_address(address)
        self._registry = registry
        self._health = health
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port actually bound (differs from the requested one when that was 0)."""
        if self._port is None:
            raise ObservabilityError(self._address, "the server is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL of the running server, e.g. ``http://127.0.0.1:10256``."""
        return f"http://{join_host_port(self._host, self.port)}"

    async def start(self) -> None:
        """Bind the address and start serving; raises :class:`ObservabilityError` if it cannot bind."""
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None)
        self._port = await start_site(
            runner,
            self._host,
            self._requested_port,
            error=lambda reason: ObservabilityError(self._address, reason),
        )
        self._runner = runner

    async def stop(self) -> None:
        """Stop serving; idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _healthz(self, request: web.Request) -> web.Response:
        report = self._health()
        body = {"status": "ok" if report.healthy else "unhealthy", **report.detail}
        return web.Response(
            status=200 if report.healthy else 503,
            text=json.dumps(body, default=str),
            content_type="application/json",
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(self._registry))
        # aiohttp's content_type argument rejects parameters; Prometheus' type carries version and charset.
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

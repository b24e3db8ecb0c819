"""Kubernetes Events about Devices (``kubectl describe device`` / ``kubectl get events`` show them).

Events are written in the background, in order: recording one never waits for the API, and an API that
refuses Events only costs a log line and a counted error.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from cloudcore.devices.api import DeviceApi, JsonObject
from cloudcore.devices.messages import SOURCE
from cloudcore.devices.metrics import DeviceControllerMetrics
from cloudcore.errors import KubeApiError, KubeUnavailableError
from cloudcore.events import event_body
from device_models.device_model import API_VERSION

__all__ = ["EventRecorder"]

log = logging.getLogger(__name__)


class EventRecorder:
    """Creates core/v1 Events whose ``involvedObject`` is a Device, from a queue served by one task."""

    def __init__(self, api: DeviceApi, metrics: DeviceControllerMetrics) -> None:
        """Nothing is written before :meth:`start`."""
        self._api = api
        self._metrics = metrics
        self._queue: asyncio.Queue[JsonObject] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start writing queued events."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="device-events")

    async def stop(self) -> None:
        """Stop; events still queued are dropped."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def warning(self, device: JsonObject, reason: str, message: str) -> None:
        """Queue a Warning event about ``device`` (the API object)."""
        self._queue.put_nowait(_event(device, "Warning", reason, message))

    def normal(self, device: JsonObject, reason: str, message: str) -> None:
        """Queue a Normal event about ``device``."""
        self._queue.put_nowait(_event(device, "Normal", reason, message))

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._api.create_event(event["metadata"]["namespace"], event)
            except (KubeApiError, KubeUnavailableError) as exc:
                self._metrics.errors.labels("event").inc()
                log.warning("cannot record event %s: %s", event["reason"], exc)


def _event(device: JsonObject, kind: Literal["Normal", "Warning"], reason: str, message: str) -> JsonObject:
    return event_body(
        device,
        event_type=kind,
        reason=reason,
        message=message,
        component=SOURCE,
        kind="Device",
        api_version=API_VERSION,
    )

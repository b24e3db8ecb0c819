"""One device's life in a mapper: connect (with backoff), collect cycles, reports, desired-value writes.

Each device runs in its own task, so a slow or dead device never delays another (devices sharing a serial
line do wait for each other's requests: that is the line's lock, in the protocol driver).

Cycles: every property is read each ``collectCycle``; properties with the same cycle are read together, with
one ``read_many`` call, so the driver can coalesce them. A poll that overruns its cycle is followed at once by
the next (no burst of catch-up polls). A value is reported when it changes, and again each ``reportCycle``
when the property has one. The properties of one poll are reported in one ``twin/update``.

Device state: ``online`` while reads succeed, ``unhealthy`` while the device answers some reads with errors,
``offline`` while it cannot be reached (reconnect with exponential backoff and jitter). Each change of state
is reported once.

Desired values: a value is checked against the DeviceModel (access mode, type, minimum, maximum) when it
arrives; a refused value is answered at once and never reaches the device. Accepted values are written by the
device's task between two polls, then read back and reported. The same desired value is written once: the
edge repeats its delta after every report while the reported value differs (e.g. 21.55 written to a register
with scale 0.1 reads back as 21.6), and that must not turn into a write per cycle. A reconnection forgets
what was written, so a device that lost its settings while away gets them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from mappers.sdk.backoff import Backoff, BackoffPolicy
from mappers.sdk.driver import DeviceConfig, DeviceDriver, DeviceValue, PropertyConfig, Reading
from mappers.sdk.errors import (
    DeviceResponseError,
    DeviceUnreachableError,
    MapperError,
    PropertyError,
    ValueRefusedError,
)
from mappers.sdk.metrics import MapperMetrics
from mappers.sdk.values import parse_desired, reported_text

log = logging.getLogger(__name__)

# Properties due within this many seconds of each other are read in the same poll.
_SAME_POLL = 0.005


class DeviceState(StrEnum):
    """The states a mapper reports on ``state/update`` (a subset of KubeEdge's)."""

    ONLINE = "online"
    UNHEALTHY = "unhealthy"
    OFFLINE = "offline"


@dataclass(frozen=True)
class Report:
    """One property's reported value: the twin string and its type."""

    value: str
    type: str


class Reporter(Protocol):
    """Where a device's news goes (the mapper's MQTT side); ``device`` is the id ``<namespace>/<name>``."""

    def report(self, device: str, values: Mapping[str, Report]) -> None:
        """Publish reported values (one ``twin/update``)."""

    def state(self, device: str, state: DeviceState) -> None:
        """Publish a change of device state."""

    def refuse(self, device: str, error: PropertyError, event_id: str) -> None:
        """Answer a desired value that was refused or could not be written."""


@dataclass
class _Group:
    """Properties read on the same cycle, and when they are due next (event loop time)."""

    cycle: float
    properties: tuple[PropertyConfig, ...]
    due: float = 0.0
    readings: Mapping[str, Reading] | None = None
    """The group's last readings, when they all succeeded."""
    report_at: float = math.inf
    """When the next report of an unchanged value is due (``reportCycle``)."""


@dataclass
class _Reported:
    """A property's last reported value: the driver's reading, its twin text, when it was reported."""

    reading: Reading | None
    text: str
    at: float


@dataclass
class _Pending:
    prop: PropertyConfig
    value: DeviceValue
    text: str
    event_id: str


class DeviceRunner:
    """Drives one device until stopped. Create, :meth:`start`, feed :meth:`desire`, :meth:`stop`."""

    def __init__(
        self,
        device: DeviceConfig,
        driver: DeviceDriver,
        reporter: Reporter,
        metrics: MapperMetrics,
        backoff: BackoffPolicy,
    ) -> None:
        self.device = device
        self._driver = driver
        self._reporter = reporter
        self._metrics = metrics
        self._backoff = Backoff(backoff)
        self._properties = {prop.name: prop for prop in device.properties}
        self._state: DeviceState | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._pending: dict[str, _Pending] = {}
        self._written: dict[str, str] = {}
        self._reported: dict[str, _Reported] = {}
        self._failing: dict[str, str] = {}
        cycles: dict[float, list[PropertyConfig]] = {}
        for prop in device.properties:
            cycles.setdefault(prop.collect_cycle, []).append(prop)
        self._groups = [_Group(cycle, tuple(props)) for cycle, props in cycles.items()]
        self._polls = metrics.polls.labels(device.id)
        self._reads = metrics.reads.labels(device.id)

    @property
    def state(self) -> DeviceState | None:
        """The last state reported, ``None`` before the first connection attempt ended."""
        return self._state

    def start(self) -> None:
        """Start the device's task."""
        self._task = asyncio.create_task(self._run(), name=f"mapper device {self.device.id}")

    async def stop(self) -> None:
        """Stop the task and close the device's connection."""
        task, self._task = self._task, None
        # Cancel until the task has ended: Python 3.11's asyncio.wait_for (which pymodbus awaits each
        # answer with) drops a cancellation that lands together with the answer, and the task polls on.
        while task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.5)
        await self._driver.close()

    def desire(self, name: str, text: str, event_id: str) -> None:
        """A desired value arrived (delta or twin/get); check it now, write it from the device's task."""
        prop = self._properties.get(name)
        if prop is None or self._written.get(name) == text:
            return
        pending = self._pending.get(name)
        if pending is not None and pending.text == text:
            return
        try:
            value = parse_desired(self.device.id, prop, text)
        except ValueRefusedError as exc:
            self._written[name] = text
            self._refuse(exc, event_id)
            return
        self._pending[name] = _Pending(prop, value, text, event_id)
        self._wake.set()

    def _refuse(self, error: PropertyError, event_id: str) -> None:
        self._metrics.error(self.device.id, error)
        log.warning(
            "desired value not written: %s", error, extra={"device": self.device.id, "event_id": event_id}
        )
        self._reporter.refuse(self.device.id, error, event_id)

    def _set_state(self, state: DeviceState) -> None:
        if state is self._state:
            return
        self._state = state
        self._metrics.state.labels(self.device.id).state(state.value)
        log.info("device %s", state.value, extra={"device": self.device.id})
        self._reporter.state(self.device.id, state)

    async def _run(self) -> None:
        while True:
            try:
                await self._driver.connect()
                await self._serve()
            except DeviceUnreachableError as exc:
                self._metrics.error(self.device.id, exc)
                if self._state is not DeviceState.OFFLINE:
                    log.warning("%s", exc, extra={"device": self.device.id})
                self._set_state(DeviceState.OFFLINE)
            except Exception as exc:  # a driver bug must not end the device's task for good
                if isinstance(exc, MapperError):
                    self._metrics.error(self.device.id, exc)
                log.exception("device task failed; reconnecting", extra={"device": self.device.id})
                self._set_state(DeviceState.OFFLINE)
            await self._driver.close()
            self._written.clear()
            await asyncio.sleep(self._backoff.next_delay())

    async def _serve(self) -> None:
        """Poll and write until the device becomes unreachable (an exception ends the session)."""
        loop = asyncio.get_running_loop()
        for group in self._groups:
            group.due = loop.time()
        while True:
            self._wake.clear()
            await self._write_pending()
            now = loop.time()
            due = [group for group in self._groups if group.due <= now + _SAME_POLL]
            if len(due) == 1:
                await self._poll(due[0].properties, group=due[0])
            elif due:
                await self._poll([prop for group in due for prop in group.properties])
            if due:
                # Reset only once the device answered: one that accepts connections and then fails every
                # read must keep backing off.
                self._backoff.reset()
                now = loop.time()
                for group in due:
                    # On time: keep the cycle's rhythm. Late (a slow device): read again at once, once.
                    group.due = max(group.due + group.cycle, now)
            delay = min(group.due for group in self._groups) - loop.time() if self._groups else 3600.0
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()

    async def _write_pending(self) -> None:
        while self._pending:
            name = next(iter(self._pending))
            pending = self._pending[name]
            # An unreachable device raises out of here: the write stays pending until it is back.
            try:
                await self._driver.write_one(pending.prop, pending.value)
            except PropertyError as exc:
                del self._pending[name]
                self._written[name] = pending.text
                self._refuse(exc, pending.event_id)
                continue
            del self._pending[name]
            self._written[name] = pending.text
            self._metrics.writes.labels(self.device.id).inc()
            log.info(
                "wrote %s = %s",
                name,
                pending.text,
                extra={"device": self.device.id, "event_id": pending.event_id},
            )
            await self._poll([pending.prop], force=True)

    async def _poll(
        self, due: Sequence[PropertyConfig], *, group: _Group | None = None, force: bool = False
    ) -> None:
        readings = await self._driver.read_many(due)
        self._polls.inc()
        now = asyncio.get_running_loop().time()
        if group is not None and readings == group.readings and now < group.report_at:
            # Nothing changed and no report is due: the common case, kept cheap.
            self._reads.inc(len(due))
            self._set_state(DeviceState.ONLINE)
            return
        changed: dict[str, Report] = {}
        answered_with_error = False
        read = 0
        for prop in due:
            reading = readings.get(prop.name)
            last = self._reported.get(prop.name)
            # Most readings repeat the last one: skip the conversion unless a report is due anyway.
            if (
                not force
                and last is not None
                and reading == last.reading
                and type(reading) is type(last.reading)
            ):
                read += 1
                if _report_due(prop, last.at, now):
                    changed[prop.name] = Report(last.text, prop.twin_type)
                    last.at = now
                continue
            try:
                text = reported_text(self.device.id, prop, reading)
            except PropertyError as exc:
                answered_with_error = answered_with_error or isinstance(exc, DeviceResponseError)
                self._property_failed(exc)
                continue
            read += 1
            if self._failing and self._failing.pop(prop.name, None) is not None:
                log.info("%s readable again", prop.name, extra={"device": self.device.id})
            if force or last is None or last.text != text or _report_due(prop, last.at, now):
                changed[prop.name] = Report(text, prop.twin_type)
                self._reported[prop.name] = _Reported(reading, text, now)
            else:
                last.reading = reading
        self._reads.inc(read)
        self._set_state(DeviceState.UNHEALTHY if answered_with_error else DeviceState.ONLINE)
        if changed:
            self._reporter.report(self.device.id, changed)
        if group is None:
            # What was reported changed outside the groups' own polls: their shortcut no longer holds.
            for other in self._groups:
                other.readings = None
        else:
            group.readings = readings if read == len(due) else None
            reported = [(self._reported.get(prop.name), prop.report_cycle) for prop in due]
            group.report_at = min(
                (last.at + cycle for last, cycle in reported if last is not None and cycle is not None),
                default=math.inf,
            )

    def _property_failed(self, error: PropertyError) -> None:
        self._metrics.error(self.device.id, error)
        # Log a failure when it starts or changes, not on every cycle it lasts.
        if self._failing.get(error.property) != error.reason:
            self._failing[error.property] = error.reason
            log.warning("%s", error, extra={"device": self.device.id})


def _report_due(prop: PropertyConfig, reported_at: float, now: float) -> bool:
    return prop.report_cycle is not None and now - reported_at >= prop.report_cycle - _SAME_POLL

"""One device's life in a mapper: connect (with backoff), collect cycles, reports, desired-value writes.

Each device runs in its own task, so a slow or dead device never delays another (devices sharing a serial
line do wait for each other's requests: that is the line's lock, in the protocol driver).

Cycles: every property is read each ``collectCycle``; properties with the same cycle are read together, with
one ``read_many`` call, so the driver can coalesce them. A poll that overruns its cycle is followed at once by
the next (no burst of catch-up polls). A value is reported when it changes, and again each ``reportCycle``
when the property has one. The properties of one poll are reported in one ``twin/update``.

Pushed values: a driver that can subscribe (:class:`~mappers.sdk.driver.SubscribingDriver`) is asked to after
each connect; what it subscribed is reported as the device pushes it, again each ``reportCycle`` while no
change comes, and is not polled. Pushes of an earlier connection are dropped, so no value kept from before a
reconnect is reported as new.

Device state: ``online`` while reads succeed, ``unhealthy`` while the device answers some reads with errors
(or refuses the mapper's connection: retried at the backoff's longest delay), ``offline`` while it cannot be
reached (reconnect with exponential backoff and jitter). Each change of state is reported once.

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

from eventbus import Backoff, BackoffPolicy
from mappers.sdk.driver import (
    DeviceConfig,
    DeviceDriver,
    DeviceValue,
    PropertyConfig,
    Reading,
    SubscribingDriver,
)
from mappers.sdk.errors import (
    DeviceRejectedError,
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


class _Pushes:
    """The :class:`~mappers.sdk.driver.PushReceiver` of one connection: keeps pushes for the device's task."""

    def __init__(self, wake: asyncio.Event) -> None:
        self.readings: dict[str, Reading] = {}
        self.error: DeviceUnreachableError | None = None
        self.closed = False
        self._wake = wake

    def changed(self, readings: Mapping[str, Reading]) -> None:
        if not self.closed:
            self.readings.update(readings)
            self._wake.set()

    def lost(self, error: DeviceUnreachableError) -> None:
        if not self.closed:
            self.error = error
            self._wake.set()


def _cycle_groups(properties: Sequence[PropertyConfig]) -> list[_Group]:
    cycles: dict[float, list[PropertyConfig]] = {}
    for prop in properties:
        cycles.setdefault(prop.collect_cycle, []).append(prop)
    return [_Group(cycle, tuple(props)) for cycle, props in cycles.items()]


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
        # Properties the device answered with an error (a subset of _failing): the device is unhealthy.
        self._unhealthy: set[str] = set()
        self._rejected: str | None = None
        self._groups = _cycle_groups(device.properties)
        self._pushes: _Pushes | None = None
        # Pushed properties with a reportCycle and a value from this connection: reported on their cycle.
        self._fresh: set[str] = set()
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
            delay: float | None = None
            try:
                await self._driver.connect()
                self._rejected = None
                await self._serve()
            except DeviceRejectedError as exc:
                delay = self._refused_by_device(exc)
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
            self._end_session()
            await asyncio.sleep(self._backoff.next_delay() if delay is None else delay)

    def _refused_by_device(self, error: DeviceRejectedError) -> float:
        """Mark the device unhealthy (logging the reason once); returns the delay before the next attempt."""
        self._metrics.error(self.device.id, error)
        if str(error) != self._rejected:
            self._rejected = str(error)
            log.error("%s", error, extra={"device": self.device.id})
        self._set_state(DeviceState.UNHEALTHY)
        # Retrying sooner cannot help: the fix is a change of configuration, here or on the device.
        return self._backoff.policy.maximum

    def _end_session(self) -> None:
        if self._pushes is not None:
            self._pushes.closed = True
            self._pushes = None
        self._fresh.clear()
        self._unhealthy.clear()
        self._written.clear()

    async def _serve(self) -> None:
        """Poll, take pushes and write until the device is unreachable (an exception ends the session)."""
        loop = asyncio.get_running_loop()
        await self._subscribe()
        for group in self._groups:
            group.due = loop.time()
        while True:
            self._wake.clear()
            if self._pushes is not None:
                self._take_pushes(self._pushes, loop.time())
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
            delay = min([group.due for group in self._groups] + [self._pushed_report_at()]) - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(None if math.isinf(delay) else delay):
                        await self._wake.wait()

    async def _subscribe(self) -> None:
        """Let a driver that can push subscribe to the properties; poll the others."""
        polled = self.device.properties
        if isinstance(self._driver, SubscribingDriver) and polled:
            self._pushes = _Pushes(self._wake)
            polled = tuple(await self._driver.subscribe(polled, self._pushes))
            if len(polled) < len(self.device.properties):
                # The device took the subscription: it answers, whatever its first pushes hold.
                self._backoff.reset()
                self._set_state(DeviceState.ONLINE)
        self._groups = _cycle_groups(polled)

    def _take_pushes(self, pushes: _Pushes, now: float) -> None:
        """Report what the device pushed since the last look; raise if the subscription was lost."""
        if pushes.error is not None:
            raise pushes.error
        if pushes.readings:
            readings, pushes.readings = pushes.readings, {}
            due = [self._properties[name] for name in readings if name in self._properties]
            read = set(self._absorb(due, readings, now))
            for prop in due:
                if prop.name in read and prop.report_cycle is not None:
                    self._fresh.add(prop.name)
                else:
                    self._fresh.discard(prop.name)
            # The device answered: a later loss starts its backoff from the shortest delay again.
            self._backoff.reset()
        self._report_pushed(now)

    def _pushed_report_at(self) -> float:
        """When the next ``reportCycle`` of a pushed value is due (event loop time), or infinity."""
        return min(
            (
                self._reported[name].at + cycle
                for name in self._fresh
                if (cycle := self._properties[name].report_cycle) is not None
            ),
            default=math.inf,
        )

    def _report_pushed(self, now: float) -> None:
        """Report each pushed value again whose ``reportCycle`` is due: a device pushes changes only."""
        due: dict[str, Report] = {}
        for name in self._fresh:
            prop, last = self._properties[name], self._reported[name]
            if _report_due(prop, last.at, now):
                due[name] = Report(last.text, prop.twin_type)
                last.at = now
        if due:
            self._reporter.report(self.device.id, due)

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
            self._set_state(DeviceState.UNHEALTHY if self._unhealthy else DeviceState.ONLINE)
            return
        read = len(self._absorb(due, readings, now, force=force))
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

    def _absorb(
        self,
        due: Sequence[PropertyConfig],
        readings: Mapping[str, Reading],
        now: float,
        *,
        force: bool = False,
    ) -> list[str]:
        """Report what changed (or is due) among ``due``'s readings, set the state; returns the names read."""
        changed: dict[str, Report] = {}
        read: list[str] = []
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
                read.append(prop.name)
                if self._failing:
                    self._readable_again(prop.name)
                if _report_due(prop, last.at, now):
                    changed[prop.name] = Report(last.text, prop.twin_type)
                    last.at = now
                continue
            try:
                text = reported_text(self.device.id, prop, reading)
            except PropertyError as exc:
                self._property_failed(exc)
                continue
            written = self._written.get(prop.name)
            if written is not None and written != text and _same_number(written, text):
                # Reported as it was desired ("75", not "75.0"): the twin compares text, and would
                # otherwise show the property out of sync and send its delta after every report.
                text = written
            read.append(prop.name)
            if self._failing:
                self._readable_again(prop.name)
            if force or last is None or last.text != text or _report_due(prop, last.at, now):
                changed[prop.name] = Report(text, prop.twin_type)
                self._reported[prop.name] = _Reported(reading, text, now)
            else:
                last.reading = reading
        self._reads.inc(len(read))
        self._set_state(DeviceState.UNHEALTHY if self._unhealthy else DeviceState.ONLINE)
        if changed:
            self._reporter.report(self.device.id, changed)
        return read

    def _readable_again(self, name: str) -> None:
        self._unhealthy.discard(name)
        if self._failing.pop(name, None) is not None:
            log.info("%s readable again", name, extra={"device": self.device.id})

    def _property_failed(self, error: PropertyError) -> None:
        if isinstance(error, DeviceResponseError):
            self._unhealthy.add(error.property)
        else:
            self._unhealthy.discard(error.property)
        self._metrics.error(self.device.id, error)
        # Log a failure when it starts or changes, not on every cycle it lasts.
        if self._failing.get(error.property) != error.reason:
            self._failing[error.property] = error.reason
            log.warning("%s", error, extra={"device": self.device.id})


def _same_number(first: str, second: str) -> bool:
    try:
        return float(first) == float(second)
    except ValueError:
        return False


def _report_due(prop: PropertyConfig, reported_at: float, now: float) -> bool:
    return prop.report_cycle is not None and now - reported_at >= prop.report_cycle - _SAME_POLL

"""The SDK's push hook that the OPC-UA mapper's subscriptions use, on a real DeviceRunner: pushed values are
reported at once and not polled, a lost subscription reconnects and pushes of the old connection are dropped,
report cycles repeat only values of the current connection, and a device that refuses the mapper is
``unhealthy`` and retried at the backoff's longest delay.

The device here is a scripted driver (the runner is what is tested); the OPC-UA driver itself is tested
against real servers in ``tests/integration/test_opcua_*.py``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

import pytest
import pytest_asyncio

from device_models import ModelProperty, OpcUaProtocolConfig, OpcUaVisitorConfig, PropertyType
from edgetwin.testing import wait_for
from mappers.sdk import (
    BackoffPolicy,
    DeviceConfig,
    DeviceRejectedError,
    DeviceRunner,
    DeviceState,
    DeviceUnreachableError,
    DeviceValue,
    MapperMetrics,
    PropertyConfig,
    PropertyError,
    PushReceiver,
    Reading,
    Report,
    SubscribingDriver,
)

DEVICE = "default/pusher"


def prop(name: str, *, report_cycle: float | None = None) -> PropertyConfig:
    """An INT property with a 20 ms collect cycle."""
    return PropertyConfig(
        name,
        ModelProperty(name=name, type=PropertyType.INT),
        OpcUaVisitorConfig(node_id=f"ns=2;s={name}"),
        collect_cycle=0.02,
        report_cycle=report_cycle,
    )


@dataclass
class ScriptedDevice:
    """A device driver that pushes the properties named in ``pushing`` and is polled for the others."""

    values: dict[str, int]
    pushing: set[str]
    push_first: bool = True
    """Push the current values when subscribed (as OPC-UA servers send initial values)."""
    refuse: DeviceRejectedError | None = None
    receivers: list[PushReceiver] = field(default_factory=list)
    polled: list[str] = field(default_factory=list)
    connects: int = 0

    async def connect(self) -> None:
        self.connects += 1
        if self.refuse is not None:
            raise self.refuse

    async def subscribe(
        self, properties: Sequence[PropertyConfig], receiver: PushReceiver
    ) -> Sequence[PropertyConfig]:
        self.receivers.append(receiver)
        if self.push_first:
            receiver.changed({p.name: self.values[p.name] for p in properties if p.name in self.pushing})
        return [p for p in properties if p.name not in self.pushing]

    async def read_many(self, properties: Sequence[PropertyConfig]) -> Mapping[str, Reading]:
        self.polled.extend(p.name for p in properties)
        return {p.name: self.values[p.name] for p in properties}

    async def write_one(self, prop: PropertyConfig, value: DeviceValue) -> None:
        raise PropertyError(DEVICE, prop.name, "not writable")

    async def close(self) -> None:
        pass


@dataclass
class Recorder:
    """The Reporter: what the mapper would publish."""

    reports: list[dict[str, str]] = field(default_factory=list)
    states: list[DeviceState] = field(default_factory=list)

    def report(self, device: str, values: Mapping[str, Report]) -> None:
        self.reports.append({name: report.value for name, report in values.items()})

    def state(self, device: str, state: DeviceState) -> None:
        self.states.append(state)

    def refuse(self, device: str, error: PropertyError, event_id: str) -> None:
        raise AssertionError(f"unexpected refusal: {error}")

    def values_of(self, name: str) -> list[str]:
        return [report[name] for report in self.reports if name in report]


@dataclass
class Running:
    device: ScriptedDevice
    recorder: Recorder
    runner: DeviceRunner


@pytest_asyncio.fixture
async def running(request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    """A started runner over ``request.param`` = (properties, ScriptedDevice, BackoffPolicy)."""
    properties, device, policy = request.param
    recorder = Recorder()
    driver: SubscribingDriver = device  # the scripted device has the optional capability
    config = DeviceConfig(
        "default", "pusher", OpcUaProtocolConfig(url="opc.tcp://127.0.0.1:4840"), tuple(properties)
    )
    runner = DeviceRunner(config, driver, recorder, MapperMetrics(), policy)
    runner.start()
    try:
        yield Running(device, recorder, runner)
    finally:
        await runner.stop()


FAST = BackoffPolicy(minimum=0.01, maximum=0.05)


@pytest.mark.parametrize(
    "running",
    [([prop("pushed"), prop("polled")], ScriptedDevice({"pushed": 1, "polled": 2}, {"pushed"}), FAST)],
    indirect=True,
)
async def test_pushed_values_are_reported_at_once_and_never_polled(running: Running) -> None:
    recorder, device = running.recorder, running.device
    await wait_for(lambda: recorder.values_of("pushed") == ["1"] and recorder.values_of("polled") == ["2"])
    await wait_for(lambda: len(device.polled) >= 3, what="a few polls")
    assert set(device.polled) == {"polled"}

    device.receivers[-1].changed({"pushed": 5})
    await wait_for(lambda: recorder.values_of("pushed") == ["1", "5"], what="the push reported")
    assert recorder.states == [DeviceState.ONLINE]


@pytest.mark.parametrize(
    "running", [([prop("level")], ScriptedDevice({"level": 1}, {"level"}), FAST)], indirect=True
)
async def test_a_lost_subscription_reconnects_and_the_old_connections_pushes_are_dropped(
    running: Running,
) -> None:
    recorder, device = running.recorder, running.device
    await wait_for(lambda: recorder.values_of("level") == ["1"])
    old = device.receivers[0]

    old.lost(DeviceUnreachableError(DEVICE, "connection lost"))
    await wait_for(lambda: len(device.receivers) == 2, what="subscribed again")
    old.changed({"level": 99})  # a late notification of the lost session
    device.receivers[1].changed({"level": 3})
    await wait_for(lambda: recorder.values_of("level")[-1] == "3", what="the new push")

    assert "99" not in recorder.values_of("level")
    assert recorder.states == [DeviceState.ONLINE, DeviceState.OFFLINE, DeviceState.ONLINE]
    assert device.polled == []


@pytest.mark.parametrize(
    "running",
    [
        (
            [prop("heartbeat", report_cycle=0.03), prop("tick")],
            ScriptedDevice({"heartbeat": 4, "tick": 0}, {"heartbeat"}),
            FAST,
        )
    ],
    indirect=True,
)
async def test_report_cycles_repeat_only_values_of_the_current_connection(running: Running) -> None:
    recorder, device = running.recorder, running.device
    await wait_for(lambda: len(recorder.values_of("heartbeat")) >= 3, what="reports each reportCycle")
    assert set(recorder.values_of("heartbeat")) == {"4"}

    device.push_first = False  # the next connection pushes nothing until the value changes
    device.receivers[0].lost(DeviceUnreachableError(DEVICE, "connection lost"))
    await wait_for(lambda: len(device.receivers) == 2, what="subscribed again")
    reported, polls = len(recorder.reports), len(device.polled)
    # "tick" is polled each 20 ms: after 5 polls, several reportCycles of "heartbeat" have passed.
    await wait_for(lambda: len(device.polled) >= polls + 5, what="100 ms of polls")
    assert not any("heartbeat" in report for report in recorder.reports[reported:])

    device.receivers[1].changed({"heartbeat": 6})
    await wait_for(lambda: recorder.values_of("heartbeat")[-1] == "6", what="the fresh value")


REFUSED = DeviceRejectedError(DEVICE, "spec.protocol.configData.password", "wrong password")
SLOW = BackoffPolicy(minimum=0.01, maximum=0.15)


@pytest.mark.parametrize(
    "running", [([prop("x")], ScriptedDevice({"x": 1}, {"x"}, refuse=REFUSED), SLOW)], indirect=True
)
async def test_a_device_refusing_the_mapper_is_unhealthy_and_retried_at_the_longest_delay(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    await wait_for(lambda: running.recorder.states == [DeviceState.UNHEALTHY])
    started, connects = time.monotonic(), running.device.connects
    await wait_for(lambda: running.device.connects >= connects + 2, what="two more attempts")
    assert time.monotonic() - started >= 2 * SLOW.maximum * 0.9  # never the short delays of the backoff
    records = caplog.get_records("setup") + caplog.records  # the runner started with the fixture
    assert [r.getMessage() for r in records if "refused" in r.getMessage()] == [str(REFUSED)]  # logged once
    assert running.recorder.states == [DeviceState.UNHEALTHY]

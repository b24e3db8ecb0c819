"""The demo's boiler driven by the OPC-UA mapper exactly as ``examples/opcua-boiler.yaml`` describes it: a
desired setpoint reaches the boiler, and the water temperature it steers comes back as reported values."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from edgetwin.demo import Boiler
from edgetwin.testing import wait_for
from eventbus import MosquittoBroker, TopicKind
from mappers.opcua import OpcUaProtocol
from tests.fixtures.mqtt import ProbeFactory
from tests.integration.test_modbus_mapper import device_topic, running_edge, set_expected, unique, wait_actual
from tests.integration.test_opcua_mapper import running_mapper, settings

pytestmark = pytest.mark.asyncio(loop_scope="module")

EXAMPLE = Path(__file__).parents[2] / "examples" / "opcua-boiler.yaml"


@pytest_asyncio.fixture(loop_scope="module")
async def boiler() -> AsyncIterator[Boiler]:
    """A fast boiler: a tick every 50 ms closes half the gap to the setpoint."""
    async with Boiler(temperature=20.0, setpoint=60.0, tick=0.05, approach=0.5) as running:
        yield running


def example_docs(url: str, namespace: str) -> list[dict[str, Any]]:
    """The example's DeviceModel and Device, pointed at ``url``, in ``namespace``."""
    model, device = yaml.safe_load_all(EXAMPLE.read_text())
    for doc in (model, device):
        doc["metadata"]["namespace"] = namespace
    device["spec"]["protocol"]["configData"]["url"] = url
    return [model, device]


async def test_the_example_device_steers_the_boiler(
    boiler: Boiler, mosquitto: MosquittoBroker, mqtt_probe: ProbeFactory, tmp_path: Path
) -> None:
    namespace, node = unique("ns"), unique("node")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    docs = example_docs(boiler.url, namespace)
    async with (
        running_edge(mosquitto, node, tmp_path / "twin.db", docs),
        running_mapper(mosquitto, node, OpcUaProtocol(settings(tmp_path))),
    ):
        await wait_actual(
            probe, namespace, "boiler-01", "temperature", "60.0"
        )  # heated to the first setpoint
        set_expected(probe, namespace, "boiler-01", "setpoint", "45")

        async def cooled() -> bool:
            return await boiler.temperature() == 45.0

        await wait_for(cooled, what="the boiler at the new setpoint")
        assert await boiler.setpoint() == 45.0
        await wait_actual(probe, namespace, "boiler-01", "temperature", "45.0")
        await wait_actual(probe, namespace, "boiler-01", "pressure", "1.5")

        # Outside the model's 30..90: refused by the mapper, the boiler keeps its setpoint.
        set_expected(probe, namespace, "boiler-01", "setpoint", "95")
        refusal = await probe.wait_message_async(
            device_topic(TopicKind.TWIN_UPDATE_RESULT, namespace, "boiler-01"), lambda m: "code" in m.json()
        )
        assert "above the maximum 90" in refusal.json()["reason"]
        assert await boiler.setpoint() == 45.0

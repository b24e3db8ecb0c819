"""MqttProbe, the test-side outside app: what it reports as received."""

from __future__ import annotations

import uuid

from edgetwin.testing import wait_for
from edgetwin.testing.mosquitto import MqttProbe
from eventbus import MosquittoBroker


async def test_received_without_a_filter_means_every_message_dollar_topics_included(
    mosquitto: MosquittoBroker,
) -> None:
    root = uuid.uuid4().hex[:8]
    device_topic = f"$hw/events/device/{root}/thermostat/twin/update"
    with MqttProbe(mosquitto.url) as probe:
        probe.subscribe(f"$hw/events/device/{root}/#", f"plain/{root}/#")
        probe.publish(device_topic, "twin")
        probe.publish(f"plain/{root}/x", "plain")
        await wait_for(lambda: len(probe.messages) == 2, what="both messages")

        assert [m.topic for m in probe.received()] == [device_topic, f"plain/{root}/x"]
        # "#" keeps its MQTT meaning: it never matches a topic that starts with "$".
        assert [m.topic for m in probe.received("#")] == [f"plain/{root}/x"]

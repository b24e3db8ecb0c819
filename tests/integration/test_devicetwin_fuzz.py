"""Random topics and payloads thrown at a running twin: it never breaks and answers every request."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devicetwin import TwinDevice, TwinProperty
from edgetwin.testing import wait_for
from eventbus import TopicKind, parse_topic
from tests.integration.test_devicetwin import Edge, edge  # noqa: F401 - `edge` is the fixture used below

REPLIES = {
    TopicKind.TWIN_UPDATE: TopicKind.TWIN_UPDATE_RESULT,
    TopicKind.TWIN_GET: TopicKind.TWIN_GET_RESULT,
    TopicKind.STATE_UPDATE: TopicKind.STATE_UPDATE_RESULT,
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
values = st.sampled_from(["1", "2.5", "-7", "true", "false", "warm", "", "two words", "a" * 513]) | st.text(
    max_size=6
)
twin_sides: st.SearchStrategy[object] = (
    st.fixed_dictionaries({"value": values}) | st.fixed_dictionaries({}) | json_values
)
msg_twins = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "expected": twin_sides,
        "actual": twin_sides,
        "optional": st.booleans() | json_values,
        "metadata": st.fixed_dictionaries(
            {"type": st.sampled_from(["int", "integer", "float", "string", "boolean", "deleted", "weird"])}
        ),
    },
)
property_names = st.sampled_from(["target", "mode", "level", "new-prop", "bad name", ""]) | st.text(
    max_size=6
)
update_bodies = st.fixed_dictionaries(
    {"event_id": st.text(max_size=8)},
    optional={
        "timestamp": st.integers(min_value=0) | json_values,
        "twin": st.dictionaries(property_names, msg_twins, max_size=3) | json_values,
    },
)
state_bodies = st.fixed_dictionaries(
    {"event_id": st.text(max_size=8)},
    optional={
        "state": st.sampled_from(["online", "offline", "ok", "unknown", "unhealthy", "asleep"]) | json_values
    },
)
payloads = st.one_of(
    update_bodies.map(json.dumps), state_bodies.map(json.dumps), json_values.map(json.dumps)
).map(str.encode) | st.binary(max_size=64)
suffixes = st.sampled_from(["twin/update", "twin/get", "state/update"]) | st.text(
    alphabet="abcdeguprtw/", min_size=1, max_size=16
)
# (device index, topic suffix, payload); the devices are: two known, one unknown, one known legacy.
messages = st.lists(
    st.tuples(st.integers(min_value=0, max_value=3), suffixes, payloads), min_size=1, max_size=12
)


@settings(
    max_examples=60,
    deadline=None,
    # The running twin (the `edge` fixture) is meant to live across examples: state piles up like in real use.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(traffic=messages)
async def test_random_traffic_is_answered_and_never_breaks_the_twin(
    edge: Edge,  # noqa: F811 - the fixture imported above
    traffic: list[tuple[int, str, bytes]],
) -> None:
    legacy_name = f"legacy-{edge.namespace}"
    if not edge.twin.list_devices():
        edge.probe.subscribe(f"$hw/events/device/{legacy_name}/#")
        for namespace, name in (
            (edge.namespace, "alpha"),
            (edge.namespace, "beta"),
            ("default", legacy_name),
        ):
            properties = [TwinProperty("target", type="float"), TwinProperty("mode", optional=True)]
            await edge.twin.upsert_device(TwinDevice(namespace, name, properties=properties))
    targets = [("alpha", False), ("beta", False), ("ghost", False), (legacy_name, True)]
    edge.probe.clear()

    expected: Counter[str] = Counter()
    for index, suffix, payload in traffic:
        name, legacy = targets[index]
        topic = edge.device_topic(name, suffix, legacy=legacy)
        parsed = parse_topic(topic)
        kind = parsed.kind if parsed is not None else None
        if parsed is not None and kind in REPLIES:
            expected[parsed.reply(REPLIES[kind])] += 1
        elif kind not in (None, TopicKind.UNKNOWN):
            continue  # a topic the twin itself publishes on: an app has no business writing there
        expected[topic] += 1  # the probe hears its own publish too
        edge.probe.publish(topic, payload)

    def answered() -> bool:
        seen = Counter(message.topic for message in edge.probe.messages)
        return all(seen[topic] >= count for topic, count in expected.items())

    await wait_for(answered, 10.0, what=f"answers to {traffic!r}")
    # One more request per device: answered after anything still due, so a double answer would show below.
    flush_id = f"flush-{uuid.uuid4().hex}"
    for name, legacy in targets:
        edge.send(name, "twin/get", {"event_id": flush_id}, legacy=legacy)
    for name, legacy in targets:
        await edge.receive(name, "twin/get/result", flush_id, legacy=legacy)
    replies = [message for message in edge.probe.messages if b"flush-" not in message.payload]
    seen = Counter(message.topic for message in replies)
    assert {topic: seen[topic] for topic in expected} == dict(expected)
    for message in replies:
        if message.topic.endswith("/result") and message.topic in expected:
            body: dict[str, Any] = message.json()
            assert isinstance(body["event_id"], str)
            assert isinstance(body["timestamp"], int)
            assert body.get("code") in (None, 400, 404)

"""The topic contract: every $hw/events topic builds and parses as CONTRACTS.md §1 says."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus import TopicError, TopicKind, parse_topic, topics

DEVICE_KINDS_HW = sorted(topics.DEVICE_KINDS - {TopicKind.DATA_UPDATE}, key=lambda kind: kind.value)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (TopicKind.TWIN_UPDATE, "$hw/events/device/ns1/dev1/twin/update"),
        (TopicKind.TWIN_UPDATE_RESULT, "$hw/events/device/ns1/dev1/twin/update/result"),
        (TopicKind.TWIN_UPDATE_DELTA, "$hw/events/device/ns1/dev1/twin/update/delta"),
        (TopicKind.TWIN_UPDATE_DOCUMENT, "$hw/events/device/ns1/dev1/twin/update/document"),
        (TopicKind.TWIN_GET, "$hw/events/device/ns1/dev1/twin/get"),
        (TopicKind.TWIN_GET_RESULT, "$hw/events/device/ns1/dev1/twin/get/result"),
        (TopicKind.STATE_UPDATE, "$hw/events/device/ns1/dev1/state/update"),
        (TopicKind.STATE_UPDATE_RESULT, "$hw/events/device/ns1/dev1/state/update/result"),
        (TopicKind.DEVICE_UPDATED, "$hw/events/device/ns1/dev1/updated"),
        (TopicKind.DATA_UPDATE, "$ke/events/device/ns1/dev1/data/update"),
    ],
)
def test_device_topics_carry_namespace_and_name(kind: TopicKind, expected: str) -> None:
    assert topics.device_topic(kind, "ns1", "dev1") == expected
    parsed = parse_topic(expected)
    assert parsed == topics.Topic(kind, expected, namespace="ns1", name="dev1")
    assert parsed.device_id == "ns1/dev1"


def test_legacy_one_segment_id_is_the_default_namespace() -> None:
    parsed = parse_topic("$hw/events/device/thermo/twin/update")
    assert parsed is not None
    assert (parsed.kind, parsed.namespace, parsed.name, parsed.legacy) == (
        TopicKind.TWIN_UPDATE,
        "default",
        "thermo",
        True,
    )
    assert parsed.device_id == "default/thermo"


def test_reply_mirrors_the_request_form() -> None:
    legacy = parse_topic("$hw/events/device/thermo/twin/update")
    namespaced = parse_topic("$hw/events/device/default/thermo/twin/update")
    assert legacy is not None
    assert namespaced is not None
    assert legacy.reply(TopicKind.TWIN_UPDATE_RESULT) == "$hw/events/device/thermo/twin/update/result"
    assert (
        namespaced.reply(TopicKind.TWIN_UPDATE_RESULT)
        == "$hw/events/device/default/thermo/twin/update/result"
    )
    assert legacy.reply(TopicKind.TWIN_UPDATE_DELTA) == "$hw/events/device/thermo/twin/update/delta"
    get = parse_topic("$hw/events/node/edge-1/membership/get")
    assert get is not None
    assert get.reply(TopicKind.MEMBERSHIP_GET_RESULT) == "$hw/events/node/edge-1/membership/get/result"


def test_reply_of_another_family_is_refused() -> None:
    node = parse_topic("$hw/events/node/edge-1/membership/get")
    assert node is not None
    with pytest.raises(TopicError):
        node.reply(TopicKind.TWIN_UPDATE_RESULT)


@pytest.mark.parametrize(
    ("topic", "namespace", "name", "legacy"),
    [
        # The suffix decides: two segments before it are <ns>/<name>, one is a legacy name.
        ("$hw/events/device/a/b/twin/update", "a", "b", False),
        ("$hw/events/device/twin/twin/update", "default", "twin", True),
        ("$hw/events/device/a/twin/twin/update", "a", "twin", False),
        ("$hw/events/device/twin/update/twin/update", "twin", "update", False),
        ("$hw/events/device/updated/updated", "default", "updated", True),
        ("$hw/events/device/state/twin/update/result", "default", "state", True),
    ],
)
def test_ambiguous_looking_topics_follow_the_suffix_rule(
    topic: str, namespace: str, name: str, legacy: bool
) -> None:
    parsed = parse_topic(topic)
    assert parsed is not None
    assert (parsed.namespace, parsed.name, parsed.legacy) == (namespace, name, legacy)


def test_device_suffixes_are_tail_free() -> None:
    # The rule above only holds if no suffix is the tail of another one.
    suffixes = [topics.device_topic(kind, "n", "d").split("/")[5:] for kind in DEVICE_KINDS_HW]
    for one in suffixes:
        for other in suffixes:
            if one != other:
                assert one[-len(other) :] != other


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (TopicKind.MEMBERSHIP_GET, "$hw/events/node/edge-1/membership/get"),
        (TopicKind.MEMBERSHIP_GET_RESULT, "$hw/events/node/edge-1/membership/get/result"),
        (TopicKind.MEMBERSHIP_UPDATED, "$hw/events/node/edge-1/membership/updated"),
    ],
)
def test_node_topics(kind: TopicKind, expected: str) -> None:
    assert topics.node_topic(kind, "edge-1") == expected
    assert parse_topic(expected) == topics.Topic(kind, expected, node="edge-1")


@pytest.mark.parametrize(
    ("topic", "kind"),
    [
        ("$hw/events/upload/events", TopicKind.UPLOAD),
        ("$hw/events/upload", TopicKind.UPLOAD),
        ("$hw/events/upload/a/b/c", TopicKind.UPLOAD),
        ("SYS/dis/upload_records", TopicKind.UPLOAD_RECORDS),
        ("$hw/events/device//twin/update", TopicKind.UNKNOWN),
        ("$hw/events/device/a/b/c/twin/update", TopicKind.UNKNOWN),
        ("$hw/events/device/a/b/twin/remove", TopicKind.UNKNOWN),
        ("$hw/events/device/twin/update", TopicKind.UNKNOWN),
        ("$hw/events/node/edge-1/membership/list", TopicKind.UNKNOWN),
        ("$hw/events/node//membership/get", TopicKind.UNKNOWN),
        ("$hw/events/whatever", TopicKind.UNKNOWN),
        ("$ke/events/device/a/b/data/delete", TopicKind.UNKNOWN),
    ],
)
def test_uploads_and_unknown_topics(topic: str, kind: TopicKind) -> None:
    parsed = parse_topic(topic)
    assert parsed is not None
    assert parsed.kind is kind
    assert parsed.topic == topic


@pytest.mark.parametrize("topic", ["foo/bar", "$SYS/broker/uptime", "hw/events/device/a/twin/update", ""])
def test_topics_outside_the_contract_are_none(topic: str) -> None:
    assert parse_topic(topic) is None


def test_edge_subscriptions_cover_both_id_forms() -> None:
    assert set(topics.EDGE_SUBSCRIPTIONS) == {
        "$hw/events/device/+/+/twin/update",
        "$hw/events/device/+/twin/update",
        "$hw/events/device/+/+/twin/get",
        "$hw/events/device/+/twin/get",
        "$hw/events/device/+/+/state/update",
        "$hw/events/device/+/state/update",
        "$hw/events/node/+/membership/get",
        "$hw/events/upload/#",
        "SYS/dis/upload_records",
    }
    assert topics.device_filters(TopicKind.TWIN_UPDATE_DELTA) == (
        "$hw/events/device/+/+/twin/update/delta",
        "$hw/events/device/+/twin/update/delta",
    )
    assert (
        topics.node_filter(TopicKind.MEMBERSHIP_UPDATED, "edge-1")
        == "$hw/events/node/edge-1/membership/updated"
    )


@pytest.mark.parametrize("bad", ["", "a/b", "a+", "#", "nul\x00"])
def test_builders_reject_segments_that_break_the_topic(bad: str) -> None:
    with pytest.raises(TopicError) as info:
        topics.device_topic(TopicKind.TWIN_UPDATE, "ns", bad)
    assert info.value.value == bad
    with pytest.raises(TopicError):
        topics.device_topic(TopicKind.TWIN_UPDATE, bad, "dev")
    with pytest.raises(TopicError):
        topics.node_topic(TopicKind.MEMBERSHIP_GET, bad)


def test_legacy_form_only_for_the_default_namespace() -> None:
    assert (
        topics.device_topic(TopicKind.TWIN_GET, "default", "d", legacy=True) == "$hw/events/device/d/twin/get"
    )
    with pytest.raises(TopicError) as info:
        topics.device_topic(TopicKind.TWIN_GET, "prod", "d", legacy=True)
    assert info.value.field == "namespace"


def test_kind_of_the_wrong_family_is_refused() -> None:
    with pytest.raises(TopicError):
        topics.device_topic(TopicKind.MEMBERSHIP_GET, "ns", "d")
    with pytest.raises(TopicError):
        topics.node_topic(TopicKind.TWIN_UPDATE, "edge-1")


def test_device_ids() -> None:
    assert topics.device_id("ns", "d") == "ns/d"
    assert topics.split_device_id("ns/d") == ("ns", "d")
    assert topics.split_device_id("d") == ("default", "d")
    with pytest.raises(TopicError):
        topics.split_device_id("ns/")
    with pytest.raises(TopicError):
        topics.split_device_id("a/b/c")


# Segments: anything an MQTT topic level may hold, plus the words the suffixes are made of.
segments = st.one_of(
    st.sampled_from(
        ["twin", "update", "result", "get", "state", "updated", "delta", "document", "default", "data"]
    ),
    st.text(
        st.characters(blacklist_characters="/+#\x00", blacklist_categories=["Cs"]),
        min_size=1,
        max_size=20,
    ),
)


@given(
    kind=st.sampled_from(sorted(topics.DEVICE_KINDS, key=lambda k: k.value)),
    namespace=segments,
    name=segments,
)
def test_device_topic_round_trip(kind: TopicKind, namespace: str, name: str) -> None:
    built = topics.device_topic(kind, namespace, name)
    parsed = parse_topic(built)
    assert parsed == topics.Topic(kind, built, namespace=namespace, name=name, legacy=False)
    assert parsed.reply(kind) == built


@given(kind=st.sampled_from(sorted(topics.DEVICE_KINDS, key=lambda k: k.value)), name=segments)
def test_legacy_device_topic_round_trip(kind: TopicKind, name: str) -> None:
    built = topics.device_topic(kind, "default", name, legacy=True)
    parsed = parse_topic(built)
    assert parsed == topics.Topic(kind, built, namespace="default", name=name, legacy=True)
    assert parsed.reply(kind) == built


@given(kind=st.sampled_from(sorted(topics.NODE_KINDS, key=lambda k: k.value)), node=segments)
def test_node_topic_round_trip(kind: TopicKind, node: str) -> None:
    built = topics.node_topic(kind, node)
    assert parse_topic(built) == topics.Topic(kind, built, node=node)


@given(st.text(max_size=80))
def test_parse_never_raises(topic: str) -> None:
    parsed = parse_topic(topic)
    assert parsed is None or parsed.topic == topic

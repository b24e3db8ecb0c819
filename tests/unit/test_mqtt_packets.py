"""The MQTT 3.1.1 codec: packets as the standard lays them out, and a stream cut anywhere reads back whole."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eventbus.packets import (
    DISCONNECT,
    PINGREQ,
    MalformedPacketError,
    Packet,
    PacketReader,
    PacketType,
    Publish,
    decode_connack,
    decode_mid,
    decode_publish,
    decode_suback,
    encode_ack,
    encode_connect,
    encode_publish,
    encode_subscribe,
    encode_unsubscribe,
)


def test_connect_as_the_standard_lays_it_out() -> None:
    # MQTT 3.1.1 §3.1: protocol name, level 4, flags (user name, password; clean session off), keepalive.
    packet = encode_connect("edge", clean_session=False, keepalive=30, username="u", password="p")
    assert packet == b"\x10\x16\x00\x04MQTT\x04\xc0\x00\x1e\x00\x04edge\x00\x01u\x00\x01p"

    anonymous = encode_connect("edge", clean_session=True, keepalive=70000, username=None, password=None)
    assert anonymous == b"\x10\x10\x00\x04MQTT\x04\x02\xff\xff\x00\x04edge"


def test_fixed_packets() -> None:
    assert PINGREQ == b"\xc0\x00"
    assert DISCONNECT == b"\xe0\x00"
    assert encode_ack(PacketType.PUBACK, 258) == b"\x40\x02\x01\x02"
    assert encode_ack(PacketType.PUBREL, 1) == b"\x62\x02\x00\x01"  # PUBREL carries flags 0010
    assert encode_subscribe(7, [("a/#", 1), ("b", 2)]) == b"\x82\x0c\x00\x07\x00\x03a/#\x01\x00\x01b\x02"
    assert encode_unsubscribe(7, ["a/#"]) == b"\xa2\x07\x00\x07\x00\x03a/#"


def test_publish_layout_and_multi_byte_remaining_length() -> None:
    assert encode_publish(b"t", b"hi", 1, True, 5) == b"\x33\x07\x00\x01t\x00\x05hi"
    assert encode_publish(b"t", b"hi", 0, False, 5) == b"\x30\x05\x00\x01thi"  # QoS 0: no packet id
    assert encode_publish(b"t", b"", 1, False, 5, dup=True)[0] == 0x3A

    big = encode_publish(b"t", bytes(200), 1, False, 1)
    assert big[1:3] == b"\xcd\x01"  # 205 = 0x4D | continuation, then 1 x 128
    assert len(big) == 3 + 205


def test_decoders() -> None:
    assert decode_connack(b"\x01\x00") == (True, 0)
    assert decode_connack(b"\x00\x05") == (False, 5)
    assert decode_mid(b"\x01\x02") == 258
    assert decode_suback(b"\x00\x07\x01\x80") == (7, [1, 0x80])
    body = encode_publish("é/x".encode(), b"\x00payload", 2, True, 9)[2:]
    assert decode_publish(0x05, body) == Publish("é/x", b"\x00payload", 2, True, False, 9)


@pytest.mark.parametrize(
    ("flags", "body"),
    [
        (0x06, b"\x00\x01t\x00\x01"),  # QoS 3
        (0x00, b"\x00"),  # no topic length
        (0x00, b"\x00\x05abc"),  # topic longer than the packet
        (0x02, b"\x00\x01t\x00"),  # QoS 1 without a packet id
        (0x00, b"\x00\x02\xff\xfe"),  # topic not UTF-8
    ],
)
def test_malformed_publish_is_refused(flags: int, body: bytes) -> None:
    with pytest.raises(MalformedPacketError):
        decode_publish(flags, body)


@pytest.mark.parametrize("body", [b"", b"\x00", b"\x00\x01\x02"])
def test_malformed_acks_are_refused(body: bytes) -> None:
    with pytest.raises(MalformedPacketError):
        decode_mid(body)
    with pytest.raises(MalformedPacketError):
        decode_connack(body)


def test_remaining_length_of_five_bytes_is_refused() -> None:
    with pytest.raises(MalformedPacketError):
        PacketReader().feed(b"\x30\xff\xff\xff\xff\x01")


def test_strings_longer_than_mqtt_allows_are_refused() -> None:
    with pytest.raises(ValueError, match="65535"):
        encode_subscribe(1, [("x" * 70000, 1)])


publishes = st.builds(
    Publish,
    topic=st.text(min_size=1, max_size=40).filter(lambda t: "\x00" not in t),
    payload=st.binary(max_size=300),
    qos=st.integers(0, 2),
    retain=st.booleans(),
    dup=st.booleans(),
    mid=st.integers(1, 0xFFFF),
)


@given(st.lists(publishes, min_size=1, max_size=8), st.lists(st.integers(0, 4000), max_size=6))
def test_a_stream_cut_anywhere_reads_back_packet_by_packet(messages: list[Publish], cuts: list[int]) -> None:
    stream = b"".join(
        encode_publish(m.topic.encode(), m.payload, m.qos, m.retain, m.mid, dup=m.dup) for m in messages
    ) + encode_ack(PacketType.PUBACK, 3)
    reader = PacketReader()
    packets: list[Packet] = []
    start = 0
    for cut in [*sorted({min(cut, len(stream)) for cut in cuts}), len(stream)]:
        packets += reader.feed(stream[start:cut])
        start = cut

    *published, ack = packets
    assert (ack.type, decode_mid(ack.body)) == (PacketType.PUBACK, 3)
    decoded = [decode_publish(packet.flags, packet.body) for packet in published]
    assert decoded == [m._replace(mid=m.mid if m.qos else 0) for m in messages]


def test_a_large_message_in_many_chunks_reads_back_whole() -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    stream = encode_publish(b"big", payload, 1, False, 7)
    reader = PacketReader()
    packets = [
        packet
        for start in range(0, len(stream), 1000)
        for packet in reader.feed(stream[start : start + 1000])
    ]
    assert [decode_publish(p.flags, p.body) for p in packets] == [Publish("big", payload, 1, False, False, 7)]

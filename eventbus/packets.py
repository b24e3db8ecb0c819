"""MQTT 3.1.1 control packets (OASIS standard, chapters 2 and 3): the encoders and the stream decoder the
client needs, and nothing it does not.

Encoders return the whole packet as ``bytes``; :class:`PacketReader` cuts a byte stream into packets. A broken
stream raises :class:`MalformedPacketError`, on which the client drops the connection (the broker sent
something no retry on this connection can make sense of).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from enum import IntEnum
from typing import NamedTuple

__all__ = [
    "DISCONNECT",
    "PINGREQ",
    "MalformedPacketError",
    "Packet",
    "PacketReader",
    "PacketType",
    "Publish",
    "decode_connack",
    "decode_mid",
    "decode_publish",
    "decode_suback",
    "encode_ack",
    "encode_connect",
    "encode_publish",
    "encode_subscribe",
    "encode_unsubscribe",
]

#: The largest value the remaining-length field can carry (§2.2.3).
MAX_REMAINING_LENGTH = 268_435_455
#: SUBACK return code of a refused subscription (§3.9.3).
SUBACK_FAILURE = 0x80

_PROTOCOL = b"\x00\x04MQTT\x04"  # protocol name and level 4 (= 3.1.1)
_USERNAME, _PASSWORD, _CLEAN_SESSION = 0x80, 0x40, 0x02
_MID = struct.Struct("!H")


class PacketType(IntEnum):
    """The control packet types (the high nibble of the first byte)."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14


PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"


class MalformedPacketError(ValueError):
    """The byte stream does not follow MQTT 3.1.1; internal to the eventbus, which drops the connection."""


class Packet(NamedTuple):
    """One received packet: its type, the flags of its first byte, and everything after the fixed header."""

    type: int
    flags: int
    body: bytes


class Publish(NamedTuple):
    """A decoded PUBLISH."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    mid: int


def _remaining_length(length: int) -> bytes:
    if length > MAX_REMAINING_LENGTH:
        raise ValueError(f"packet of {length} bytes exceeds the MQTT limit")
    if length < 128:  # nearly every packet of the twin: one byte, no loop
        return bytes((length,))
    encoded = bytearray()
    while True:
        length, digit = divmod(length, 128)
        encoded.append(digit | 0x80 if length else digit)
        if not length:
            return bytes(encoded)


def _string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    if len(data) > 0xFFFF:
        raise ValueError(f"string of {len(data)} bytes exceeds the MQTT limit of 65535")
    return _MID.pack(len(data)) + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _remaining_length(len(body)) + body


def encode_connect(
    client_id: str, *, clean_session: bool, keepalive: int, username: str | None, password: str | None
) -> bytes:
    """CONNECT (§3.1); no will. ``keepalive`` in seconds (at most 65535)."""
    flags = _CLEAN_SESSION if clean_session else 0
    payload = _string(client_id)
    if username is not None:
        flags |= _USERNAME
        payload += _string(username)
        if password is not None:
            flags |= _PASSWORD
            payload += _string(password)
    body = _PROTOCOL + bytes((flags,)) + _MID.pack(min(keepalive, 0xFFFF)) + payload
    return _packet(PacketType.CONNECT << 4, body)


def encode_publish(
    topic: bytes, payload: bytes, qos: int, retain: bool, mid: int, *, dup: bool = False
) -> bytes:
    """PUBLISH (§3.3) of an already UTF-8 encoded topic; ``mid`` is ignored for QoS 0."""
    first = PacketType.PUBLISH << 4 | dup << 3 | qos << 1 | retain
    variable = _MID.pack(len(topic)) + topic + (_MID.pack(mid) if qos else b"")
    length = len(variable) + len(payload)
    if length < 128:
        return b"".join((bytes((first, length)), variable, payload))
    return b"".join((bytes((first,)), _remaining_length(length), variable, payload))


def encode_ack(packet_type: PacketType, mid: int) -> bytes:
    """PUBACK, PUBREC, PUBREL or PUBCOMP (§3.4-3.7): the packet identifier only."""
    # PUBREL is the one that carries flags 0010 (§3.6.1).
    flags = 0x02 if packet_type is PacketType.PUBREL else 0
    return bytes((packet_type << 4 | flags, 2)) + _MID.pack(mid)


def encode_subscribe(mid: int, filters: Sequence[tuple[str, int]]) -> bytes:
    """SUBSCRIBE (§3.8) of (topic filter, requested QoS) pairs."""
    body = _MID.pack(mid) + b"".join(_string(name) + bytes((qos,)) for name, qos in filters)
    return _packet(PacketType.SUBSCRIBE << 4 | 0x02, body)


def encode_unsubscribe(mid: int, filters: Iterable[str]) -> bytes:
    """UNSUBSCRIBE (§3.10)."""
    body = _MID.pack(mid) + b"".join(_string(name) for name in filters)
    return _packet(PacketType.UNSUBSCRIBE << 4 | 0x02, body)


def decode_connack(body: bytes) -> tuple[bool, int]:
    """CONNACK (§3.2): (session present, return code)."""
    if len(body) != 2:
        raise MalformedPacketError(f"CONNACK of {len(body)} bytes")
    return bool(body[0] & 0x01), body[1]


def decode_mid(body: bytes) -> int:
    """The packet identifier of PUBACK, PUBREC, PUBREL, PUBCOMP or UNSUBACK."""
    if len(body) != 2:
        raise MalformedPacketError(f"acknowledgement of {len(body)} bytes")
    mid: int = _MID.unpack(body)[0]
    return mid


def decode_suback(body: bytes) -> tuple[int, list[int]]:
    """SUBACK (§3.9): the packet identifier and one return code per filter (granted QoS or 0x80)."""
    if len(body) < 3:
        raise MalformedPacketError(f"SUBACK of {len(body)} bytes")
    mid: int = _MID.unpack_from(body)[0]
    return mid, list(body[2:])


def decode_publish(flags: int, body: bytes) -> Publish:
    """PUBLISH (§3.3), from the flags of its first byte and its body."""
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise MalformedPacketError("PUBLISH with QoS 3")
    if len(body) < 2:
        raise MalformedPacketError("PUBLISH without a topic")
    end = 2 + (body[0] << 8 | body[1])
    try:
        topic = body[2:end].decode()
    except UnicodeDecodeError as exc:
        raise MalformedPacketError(f"topic is not UTF-8: {exc}") from exc
    mid = 0
    if qos:
        if len(body) < end + 2:
            raise MalformedPacketError("PUBLISH without a packet identifier")
        mid = body[end] << 8 | body[end + 1]
        end += 2
    elif len(body) < end:
        raise MalformedPacketError("PUBLISH shorter than its topic")
    return Publish(topic, body[end:], qos, bool(flags & 0x01), bool(flags & 0x08), mid)


class PacketReader:
    """Cuts a byte stream into packets; keeps an incomplete one until the rest arrives."""

    def __init__(self) -> None:
        # What is left of an incomplete packet; grown in place, so that a large message arriving in many
        # chunks costs linear time.
        self._pending = bytearray()

    def feed(self, data: bytes) -> list[Packet]:
        """Every packet completed by ``data``, in stream order."""
        if self._pending:
            self._pending += data
            packets, used = _split(self._pending)
            del self._pending[:used]
        else:  # the usual case: whole packets, read straight from ``data``
            packets, used = _split(data)
            self._pending += data[used:]
        return packets


def _split(buffer: bytes | bytearray) -> tuple[list[Packet], int]:
    """The complete packets at the start of ``buffer`` and how many bytes they take."""
    packets: list[Packet] = []
    size = len(buffer)
    position = 0
    while size - position >= 2:
        first = buffer[position]
        # Remaining length: 1 to 4 bytes, 7 bits each, least significant first (§2.2.3).
        length = 0
        shift = 0
        index = position + 1
        while True:
            if index >= size:
                return packets, position
            digit = buffer[index]
            length |= (digit & 0x7F) << shift
            index += 1
            if not digit & 0x80:
                break
            shift += 7
            if shift > 21:
                raise MalformedPacketError("remaining length longer than 4 bytes")
        end = index + length
        if end > size:
            break
        packets.append(Packet(first >> 4, first & 0x0F, bytes(buffer[index:end])))
        position = end
    return packets, position

"""OPC-UA values ↔ twin values: every built-in scalar type both ways, ranges, and what a twin cannot hold."""

from __future__ import annotations

import datetime
import struct
from typing import Any

import pytest
from asyncua import ua
from hypothesis import given
from hypothesis import strategies as st

from device_models import ModelProperty, OpcUaVisitorConfig, PropertyType
from mappers.opcua import ValueDecodeError, decode, encode
from mappers.sdk import DeviceValue, PropertyConfig, ValueEncodeError, format_reported

MOMENT = datetime.datetime(2024, 5, 6, 7, 8, 9, 500000, tzinfo=datetime.UTC)


def twin_text(variant: ua.Variant, model_type: PropertyType) -> str:
    """What a property of ``model_type`` reports for a node holding ``variant``."""
    prop = PropertyConfig("p", ModelProperty(name="p", type=model_type), OpcUaVisitorConfig(node_id="i=1"))
    return format_reported("default/d", prop, decode(variant))


@pytest.mark.parametrize(
    ("variant", "model_type", "text"),
    [
        (ua.Variant(True, ua.VariantType.Boolean), PropertyType.BOOLEAN, "true"),
        (ua.Variant(-128, ua.VariantType.SByte), PropertyType.INT, "-128"),
        (ua.Variant(255, ua.VariantType.Byte), PropertyType.INT, "255"),
        (ua.Variant(-32768, ua.VariantType.Int16), PropertyType.INT, "-32768"),
        (ua.Variant(65535, ua.VariantType.UInt16), PropertyType.INT, "65535"),
        (ua.Variant(-(2**31), ua.VariantType.Int32), PropertyType.INT, "-2147483648"),
        (ua.Variant(2**32 - 1, ua.VariantType.UInt32), PropertyType.INT, "4294967295"),
        (ua.Variant(-(2**63), ua.VariantType.Int64), PropertyType.INT, "-9223372036854775808"),
        (ua.Variant(2**63 - 1, ua.VariantType.UInt64), PropertyType.INT, "9223372036854775807"),
        (
            ua.Variant(struct.unpack("<f", struct.pack("<f", 0.1))[0], ua.VariantType.Float),
            PropertyType.FLOAT,
            "0.1",
        ),
        (ua.Variant(21.55, ua.VariantType.Double), PropertyType.DOUBLE, "21.55"),
        (ua.Variant(7, ua.VariantType.Int32), PropertyType.DOUBLE, "7"),
        (ua.Variant("on-duty", ua.VariantType.String), PropertyType.STRING, "on-duty"),
        (ua.Variant(MOMENT, ua.VariantType.DateTime), PropertyType.STRING, "2024-05-06T07:08:09.500000Z"),
        (ua.Variant(b"\x01\xff", ua.VariantType.ByteString), PropertyType.BYTES, "01ff"),
    ],
)
def test_node_values_become_twin_values(variant: ua.Variant, model_type: PropertyType, text: str) -> None:
    assert twin_text(variant, model_type) == text


def test_a_datetime_is_reported_in_utc() -> None:
    summer = datetime.datetime(2024, 7, 1, 12, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert decode(ua.Variant(summer, ua.VariantType.DateTime)) == "2024-07-01T10:00:00Z"


@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        (
            ua.Variant([1, 2], ua.VariantType.Int32, is_array=True),
            "is an array of Int32; twin values are scalars",
        ),
        (ua.Variant(), "has no value (null)"),
        (
            ua.Variant(ua.LocalizedText("hi"), ua.VariantType.LocalizedText),
            "is a LocalizedText, not a built-in",
        ),
        (ua.Variant(ua.NodeId(1, 2), ua.VariantType.NodeId), "is a NodeId, not a built-in"),
    ],
)
def test_values_a_twin_cannot_hold_are_refused_with_the_reason(variant: ua.Variant, reason: str) -> None:
    with pytest.raises(ValueDecodeError) as caught:
        decode(variant)
    assert caught.value.reason.startswith(reason)


@pytest.mark.parametrize(
    ("value", "vtype", "expected"),
    [
        (True, ua.VariantType.Boolean, True),
        ("false", ua.VariantType.Boolean, False),
        (-128, ua.VariantType.SByte, -128),
        (255, ua.VariantType.Byte, 255),
        (12.0, ua.VariantType.Int16, 12),  # a FLOAT property writing a whole number to an integer node
        ("65535", ua.VariantType.UInt16, 65535),
        (2**31 - 1, ua.VariantType.Int32, 2**31 - 1),
        (0, ua.VariantType.UInt32, 0),
        (-(2**63), ua.VariantType.Int64, -(2**63)),
        (2**64 - 1, ua.VariantType.UInt64, 2**64 - 1),
        (21.5, ua.VariantType.Float, 21.5),
        (3, ua.VariantType.Double, 3.0),
        ("text", ua.VariantType.String, "text"),
        (42, ua.VariantType.String, "42"),
        ("2024-05-06T07:08:09.5Z", ua.VariantType.DateTime, MOMENT),
        ("2024-05-06T09:08:09.5+02:00", ua.VariantType.DateTime, MOMENT),
        (b"\x01", ua.VariantType.ByteString, b"\x01"),
    ],
)
def test_twin_values_become_the_nodes_variant_type(
    value: DeviceValue, vtype: ua.VariantType, expected: Any
) -> None:
    variant = encode(value, vtype)
    assert (variant.Value, variant.VariantType) == (expected, vtype)
    # What asyncua puts on the wire decodes to the same value.
    assert (
        ua.ua_binary.variant_from_binary(ua.utils.Buffer(ua.ua_binary.variant_to_binary(variant))) == variant
    )


@pytest.mark.parametrize(
    ("value", "vtype", "reason"),
    [
        (128, ua.VariantType.SByte, "is out of range -128..127 of SByte"),
        (-1, ua.VariantType.Byte, "is out of range 0..255 of Byte"),
        (70000, ua.VariantType.UInt16, "is out of range 0..65535 of UInt16"),
        (2**64, ua.VariantType.UInt64, "is out of range 0..18446744073709551615 of UInt64"),
        (1.5, ua.VariantType.Int32, "is not an integer (Int32 node)"),
        (True, ua.VariantType.Int32, "is not an integer (Int32 node)"),
        ("maybe", ua.VariantType.Boolean, "is not a boolean (Boolean node)"),
        ("warm", ua.VariantType.Double, "is not a number (Double node)"),
        (1e39, ua.VariantType.Float, "is out of range of Float"),
        ("yesterday", ua.VariantType.DateTime, "is not RFC 3339 date and time"),
        ("01ff", ua.VariantType.ByteString, "a ByteString node takes a BYTES property"),
        (
            1,
            ua.VariantType.ExtensionObject,
            "the node's data type ExtensionObject is not a built-in scalar type",
        ),
    ],
)
def test_values_the_node_cannot_take_are_refused_with_the_reason(
    value: DeviceValue, vtype: ua.VariantType, reason: str
) -> None:
    with pytest.raises(ValueEncodeError) as caught:
        encode(value, vtype)
    assert caught.value.reason.startswith(reason)


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_a_float_reads_back_as_the_shortest_text_of_the_same_32_bit_value(number: float) -> None:
    decoded = decode(ua.Variant(number, ua.VariantType.Float))
    assert isinstance(decoded, float)
    assert struct.pack("<f", decoded) == struct.pack("<f", number)
    assert len(repr(decoded)) <= max(len(repr(number)), len(f"{number:.9g}"))
    # Written back to a Float node, the twin text is the same 32-bit value again.
    assert struct.pack("<f", encode(repr(decoded), ua.VariantType.Float).Value) == struct.pack("<f", number)

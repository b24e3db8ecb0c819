"""KubeEdge's BLE data converter, ``dataWrite`` and the plain encodings (mappers.ble.converter)."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_models import BleDataConverter, BleVisitorConfig, ModelProperty
from mappers.ble import ValueDecodeError, convert, decode, encode
from mappers.sdk import ValueEncodeError


def converter(**fields: Any) -> BleDataConverter:
    return BleDataConverter.model_validate(fields)


def model(kind: str, access: str = "ReadWrite") -> ModelProperty:
    return ModelProperty.model_validate({"name": "p", "type": kind, "accessMode": access})


def visitor(**fields: Any) -> BleVisitorConfig:
    return BleVisitorConfig.model_validate({"characteristicUUID": "2a6e", **fields})


def test_reversed_indices_read_a_little_endian_value_then_operations_apply_in_order() -> None:
    hundredths = converter(
        startIndex=1,
        endIndex=0,
        orderOfOperations=[
            {"operationType": "Multiply", "operationValue": 0.01},
            {"operationType": "Add", "operationValue": 1},
            {"operationType": "Divide", "operationValue": 2},
            {"operationType": "Subtract", "operationValue": 0.5},
        ],
    )
    assert convert(bytes.fromhex("3408"), hundredths) == (21.0 + 1) / 2 - 0.5


def test_indices_in_order_read_big_endian_and_results_without_operations_stay_integers() -> None:
    assert convert(bytes.fromhex("aa0102ff"), converter(startIndex=1, endIndex=2)) == 0x0102


def test_shift_left_wins_over_shift_right_as_in_kubeedge() -> None:
    assert convert(b"\x03", converter(shiftLeft=4, shiftRight=1)) == 0x30
    assert convert(b"\xf0", converter(shiftRight=4)) == 0x0F


def test_results_are_rounded_to_twelve_significant_digits() -> None:
    multiply = converter(
        startIndex=1, endIndex=0, orderOfOperations=[{"operationType": "Multiply", "operationValue": 0.01}]
    )
    assert convert((2090).to_bytes(2, "little"), multiply) == 20.9


@pytest.mark.parametrize(
    ("data", "message"), [(b"\x01", "indices 0..1 are outside the 1-byte value"), (b"", "empty")]
)
def test_indices_outside_the_value_say_so(data: bytes, message: str) -> None:
    with pytest.raises(ValueDecodeError, match=message):
        convert(data, converter(startIndex=0, endIndex=1))


@given(st.binary(min_size=1, max_size=8), st.data())
def test_any_span_reads_the_bytes_as_one_number(data: bytes, draw: st.DataObject) -> None:
    start = draw.draw(st.integers(0, len(data) - 1))
    end = draw.draw(st.integers(0, len(data) - 1))
    span = data[min(start, end) : max(start, end) + 1]
    expected = int.from_bytes(span, "big" if start <= end else "little")
    assert convert(data, converter(startIndex=start, endIndex=end)) == expected


def test_plain_types_without_a_converter() -> None:
    assert decode(model("STRING"), visitor(), b"hello") == "hello"
    assert decode(model("BYTES"), visitor(), b"\x00\x01") == b"\x00\x01"
    assert decode(model("BOOLEAN"), visitor(), b"\x00\x02") is True
    assert decode(model("INT"), visitor(), b"\x07\x09") == 7  # KubeEdge's default converter: byte 0
    with pytest.raises(ValueDecodeError, match="not UTF-8"):
        decode(model("STRING"), visitor(), b"\xff")


def test_a_value_of_the_data_write_map_reads_as_its_key() -> None:
    led = visitor(dataWrite={"ON": "01", "OFF": "00"})
    assert decode(model("STRING"), led, b"\x01") == "ON"
    assert decode(model("STRING"), led, b"\x00") == "OFF"


def test_writes_follow_the_data_write_map_and_refuse_other_values() -> None:
    led = visitor(dataWrite={"ON": "01", "OFF": "00"})
    assert encode("ON", model("STRING"), led) == b"\x01"
    with pytest.raises(ValueEncodeError, match=r"not one of the values of dataWrite \(ON, OFF\)"):
        encode("BLINK", model("STRING"), led)
    numbers = visitor(dataWrite={"1": "aa", "2.5": "bb"})
    assert encode(2.5, model("FLOAT"), numbers) == b"\xbb"
    assert encode(1.0, model("FLOAT"), numbers) == b"\xaa"


def test_writes_without_a_map_encode_by_type() -> None:
    assert encode(True, model("BOOLEAN"), visitor()) == b"\x01"
    assert encode("hi", model("STRING"), visitor()) == b"hi"
    assert encode(b"\x01\x02", model("BYTES"), visitor()) == b"\x01\x02"
    assert encode(300, model("INT"), visitor()) == b"\x2c\x01"
    assert encode(-1, model("INT"), visitor()) == b"\xff"
    assert encode(5, model("INT"), visitor(dataConverter={"startIndex": 3, "endIndex": 0})) == b"\x05\0\0\0"
    assert encode(1.5, model("FLOAT"), visitor()) == struct.pack("<f", 1.5)
    assert encode(1.5, model("DOUBLE"), visitor()) == struct.pack("<d", 1.5)
    with pytest.raises(ValueEncodeError, match="does not fit in 1 bytes"):
        encode(300, model("INT"), visitor(dataConverter={"startIndex": 0, "endIndex": 0}))

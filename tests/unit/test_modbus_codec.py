"""The Modbus codec: every dataType x limit x isSwap x isRegisterSwap x scale, known vectors and errors."""

from __future__ import annotations

import itertools
import math
import struct
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_models import (
    MODBUS,
    ModbusDataType,
    ModbusRegister,
    ModbusVisitorConfig,
    ModelValidationError,
    PropertyType,
    parse_visitor_config,
)
from mappers.modbus.codec import Encoding
from mappers.sdk import ValueEncodeError

# (dataType, limit) pairs KubeEdge users and edgetwin's explicit types write, with the raw type they mean.
LAYOUTS = [
    ("int", 1, ModbusDataType.INT16),
    ("int", 2, ModbusDataType.INT32),
    ("int", 4, ModbusDataType.INT64),
    ("float", 1, ModbusDataType.INT16),
    ("float", 2, ModbusDataType.FLOAT32),
    ("float", 4, ModbusDataType.FLOAT64),
    ("double", 1, ModbusDataType.INT16),
    ("double", 2, ModbusDataType.FLOAT32),
    ("double", 4, ModbusDataType.FLOAT64),
    ("int16", 1, ModbusDataType.INT16),
    ("uint16", 1, ModbusDataType.UINT16),
    ("int32", 2, ModbusDataType.INT32),
    ("uint32", 2, ModbusDataType.UINT32),
    ("int64", 4, ModbusDataType.INT64),
    ("float32", 2, ModbusDataType.FLOAT32),
    ("float64", 4, ModbusDataType.FLOAT64),
]
SCALES = ["1", "0.1", "10", "0.01"]
SWAPS = list(itertools.product([False, True], repeat=2))

INTEGER_RANGES = {
    ModbusDataType.INT16: (-(2**15), 2**15 - 1),
    ModbusDataType.UINT16: (0, 2**16 - 1),
    ModbusDataType.INT32: (-(2**31), 2**31 - 1),
    ModbusDataType.UINT32: (0, 2**32 - 1),
    ModbusDataType.INT64: (-(2**63), 2**63 - 1),
}


def visitor(
    register: str,
    data_type: str | None,
    limit: int | None = None,
    scale: object = 1,
    is_swap: bool = False,
    is_register_swap: bool = False,
) -> ModbusVisitorConfig:
    """A visitor with these KubeEdge fields (offset 0), validated as device_models does."""
    config: dict[str, Any] = {
        "register": register,
        "offset": 0,
        "scale": scale,
        "isSwap": is_swap,
        "isRegisterSwap": is_register_swap,
    }
    if data_type is not None:
        config["dataType"] = data_type
    if limit is not None:
        config["limit"] = limit
    parsed = parse_visitor_config(MODBUS, config)
    assert isinstance(parsed, ModbusVisitorConfig)
    return parsed


def encoding(
    register: str,
    data_type: str,
    limit: int | None = None,
    scale: object = 1,
    is_swap: bool = False,
    is_register_swap: bool = False,
) -> Encoding:
    """The Encoding of a visitor with these KubeEdge fields (the form the codec tests were written in)."""
    return Encoding.from_visitor(visitor(register, data_type, limit, scale, is_swap, is_register_swap))


def _raw_samples(raw: ModbusDataType, scale: str) -> list[int | float]:
    if raw in INTEGER_RANGES:
        low, high = INTEGER_RANGES[raw]
        if Decimal(scale) != Decimal(scale).to_integral_value():
            # A scaled reading is a float: keep the raw value within a double's 53-bit mantissa.
            low, high = max(low, -(2**53)), min(high, 2**53)
        return [low, low + 1, 0, 1, 215, high - 1, high]
    big = 3.0e37 if raw is ModbusDataType.FLOAT32 else 1.5e300
    return [0.0, 215.0, -12.5, 1.0e-3, -big, big]


def _engineering(raw_value: int | float, scale: str) -> int | float:
    """What a device holding ``raw_value`` shows: raw x scale (exact decimal arithmetic)."""
    if isinstance(raw_value, int) and Decimal(scale) == Decimal(scale).to_integral_value():
        return raw_value * int(scale)
    return float(Decimal(repr(raw_value) if isinstance(raw_value, float) else raw_value) * Decimal(scale))


@pytest.mark.parametrize(("data_type", "limit", "raw"), LAYOUTS)
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize(("is_swap", "is_register_swap"), SWAPS)
def test_numeric_round_trip(
    data_type: str, limit: int, raw: ModbusDataType, scale: str, is_swap: bool, is_register_swap: bool
) -> None:
    enc = encoding("HoldingRegister", data_type, limit, scale, is_swap, is_register_swap)
    assert (enc.raw, enc.count) == (raw, limit)
    for raw_value in _raw_samples(raw, scale):
        value = _engineering(raw_value, scale)
        words = enc.encode(value)
        assert len(words) == limit
        assert all(0 <= word <= 0xFFFF for word in words)
        assert enc.decode(words) == pytest.approx(value, rel=1e-6), (raw_value, words)


@pytest.mark.parametrize(("is_swap", "is_register_swap"), SWAPS)
@pytest.mark.parametrize(
    ("data_type", "limit", "value"), [("string", 3, "abcde"), ("bytes", 2, b"\x01\x02\x03")]
)
def test_string_and_bytes_round_trip(
    data_type: str, limit: int, value: str | bytes, is_swap: bool, is_register_swap: bool
) -> None:
    enc = encoding("HoldingRegister", data_type, limit, 1, is_swap, is_register_swap)
    decoded = enc.decode(enc.encode(value))
    # Strings lose their NUL padding; bytes keep the register's full width.
    assert decoded == (value if isinstance(value, str) else value.ljust(2 * limit, b"\x00"))


@pytest.mark.parametrize(
    "register", ["CoilRegister", "DiscreteInputRegister", "HoldingRegister", "InputRegister"]
)
@pytest.mark.parametrize(("is_swap", "is_register_swap"), SWAPS)
def test_boolean_round_trip(register: str, is_swap: bool, is_register_swap: bool) -> None:
    enc = encoding(register, "boolean", 1, 1, is_swap, is_register_swap)
    assert enc.encode(True) == (1,)
    assert enc.encode(False) == (0,)
    assert enc.decode([1]) is True
    assert enc.decode([0]) is False


FLOAT_21_5 = (0x41AC, 0x0000)  # IEEE-754 float32 of 21.5 is 0x41AC0000


@pytest.mark.parametrize(
    ("data_type", "limit", "scale", "is_swap", "is_register_swap", "words", "value"),
    [
        # KubeEdge's own example: a temperature as dataType float, limit 1, scale 0.1.
        ("float", 1, "0.1", False, False, (215,), 21.5),
        ("float", 1, "0.1", False, False, (0xFFCE,), -5.0),
        ("float", 1, "0.1", True, False, (0xD700,), 21.5),
        ("int", 1, "1", False, False, (0xFFFF,), -1),
        ("uint16", 1, "1", False, False, (0xFFFF,), 65535),
        ("int", 1, "10", False, False, (7,), 70),
        ("int", 2, "1", False, False, (0x0001, 0x0002), 65538),
        ("int", 2, "1", False, True, (0x0002, 0x0001), 65538),
        ("int", 2, "1", True, False, (0x0100, 0x0200), 65538),
        ("int", 2, "1", True, True, (0x0200, 0x0100), 65538),
        ("uint32", 2, "1", False, False, (0xFFFF, 0xFFFE), 0xFFFFFFFE),
        ("int64", 4, "1", False, False, (0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE), -2),
        ("int64", 4, "1", False, True, (0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF), -2),
        ("float", 2, "1", False, False, FLOAT_21_5, 21.5),
        ("float", 2, "1", False, True, FLOAT_21_5[::-1], 21.5),
        ("float", 2, "1", True, False, (0xAC41, 0x0000), 21.5),
        ("float", 2, "1", True, True, (0x0000, 0xAC41), 21.5),
        ("float32", 2, "0.5", False, False, FLOAT_21_5, 10.75),
        ("double", 4, "1", False, False, (0x3FF0, 0, 0, 0), 1.0),
        ("double", 4, "1", False, True, (0, 0, 0, 0x3FF0), 1.0),
        ("float64", 4, "1", True, False, (0xF03F, 0, 0, 0), 1.0),
        ("float64", 4, "1", True, True, (0, 0, 0, 0xF03F), 1.0),
        ("string", 2, "1", False, False, (0x4142, 0x4300), "ABC"),
        ("string", 2, "1", True, False, (0x4241, 0x0043), "ABC"),
        ("string", 2, "1", False, True, (0x4300, 0x4142), "ABC"),
        ("bytes", 2, "1", False, False, (0x0102, 0x0304), b"\x01\x02\x03\x04"),
        ("boolean", 1, "1", False, False, (1,), True),
    ],
)
def test_known_vectors(
    data_type: str,
    limit: int,
    scale: str,
    is_swap: bool,
    is_register_swap: bool,
    words: tuple[int, ...],
    value: object,
) -> None:
    enc = encoding("InputRegister", data_type, limit, scale, is_swap, is_register_swap)
    assert enc.decode(words) == value
    assert enc.encode(value) == words


def test_float32_reads_as_its_shortest_decimal() -> None:
    enc = encoding("HoldingRegister", "float32")
    words = struct.unpack(">HH", struct.pack(">f", 21.3))
    assert enc.decode(words) == 21.3


def test_scaled_reading_is_exact_decimal() -> None:
    enc = encoding("HoldingRegister", "int16", scale=0.1)
    assert enc.decode([3]) == 0.3  # not 0.30000000000000004
    assert enc.encode(0.3) == (3,)


def test_write_rounds_half_to_even_after_scaling() -> None:
    enc = encoding("HoldingRegister", "float", 1, "0.1")
    assert enc.encode(21.55) == (216,)
    assert enc.encode(21.45) == (214,)


def test_numbers_given_as_strings() -> None:
    enc = encoding("HoldingRegister", "float", 1, "0.1")
    assert enc.scale == Decimal("0.1")


def test_limit_defaults_by_type() -> None:
    assert encoding("HoldingRegister", "int").count == 1
    assert encoding("HoldingRegister", "float").raw is ModbusDataType.FLOAT32
    assert encoding("HoldingRegister", "double").raw is ModbusDataType.FLOAT64
    assert encoding("HoldingRegister", "uint32").count == 2
    assert encoding("CoilRegister", "int").decode([1]) == 1
    assert encoding("HoldingRegister", "FLOAT", 2).raw is ModbusDataType.FLOAT32


def test_tables() -> None:
    assert ModbusRegister.COIL.is_bit
    assert ModbusRegister.COIL.writable
    assert ModbusRegister.COIL.max_per_read == 2000
    assert not ModbusRegister.INPUT.writable
    assert ModbusRegister.INPUT.max_per_read == 125
    assert not ModbusRegister.DISCRETE_INPUT.writable


@pytest.mark.parametrize(
    ("register", "data_type", "limit", "scale", "field"),
    [
        ("HoldRegister", "int", 1, 1, "register"),
        ("HoldingRegister", "quaternion", 1, 1, "dataType"),
        ("HoldingRegister", "int", 3, 1, "limit"),
        ("HoldingRegister", "float", 3, 1, "limit"),
        ("HoldingRegister", "boolean", 2, 1, "limit"),
        ("HoldingRegister", "float32", 1, 1, "limit"),
        ("HoldingRegister", "string", None, 1, "limit"),
        ("HoldingRegister", "string", 126, 1, "limit"),
        ("HoldingRegister", "int", 0, 1, "limit"),
        ("HoldingRegister", "int", 1, "abc", "scale"),
        ("HoldingRegister", "int", 1, "inf", "scale"),
        ("CoilRegister", "float", 1, 1, "dataType"),
        ("CoilRegister", "boolean", 2, 1, "limit"),
    ],
)
def test_bad_visitor_names_the_field(
    register: str, data_type: str, limit: int | None, scale: object, field: str
) -> None:
    with pytest.raises(ModelValidationError) as caught:
        encoding(register, data_type, limit, scale)
    assert [problem.path for problem in caught.value.problems] == [field]
    assert field in str(caught.value)


def test_zero_scale_means_no_scaling_as_in_kubeedge() -> None:
    assert encoding("HoldingRegister", "int", 1, 0).decode([7]) == 7


@pytest.mark.parametrize(
    ("property_type", "raw", "count"),
    [
        (PropertyType.INT, ModbusDataType.INT16, 1),
        (PropertyType.FLOAT, ModbusDataType.FLOAT32, 2),
        (PropertyType.DOUBLE, ModbusDataType.FLOAT64, 4),
        (PropertyType.BOOLEAN, ModbusDataType.BOOLEAN, 1),
    ],
)
def test_model_type_decides_without_a_visitor_data_type(
    property_type: PropertyType, raw: ModbusDataType, count: int
) -> None:
    enc = Encoding.from_visitor(visitor("HoldingRegister", None), property_type)
    assert (enc.raw, enc.count) == (raw, count)


def test_a_visitor_data_type_wins_over_the_model_type() -> None:
    enc = Encoding.from_visitor(visitor("HoldingRegister", "uint32"), PropertyType.STRING)
    assert (enc.raw, enc.count) == (ModbusDataType.UINT32, 2)


@pytest.mark.parametrize(
    ("register", "limit", "property_type", "field", "reason"),
    [
        ("HoldingRegister", None, PropertyType.STREAM, "dataType", "is required for a STREAM property"),
        ("HoldingRegister", None, None, "dataType", "is required"),
        ("HoldingRegister", 3, PropertyType.INT, "limit", "int takes 1 or 2 or 4 register(s)"),
        ("HoldingRegister", None, PropertyType.STRING, "limit", "is required with dataType string"),
        ("CoilRegister", None, PropertyType.FLOAT, "dataType", "CoilRegister holds single bits"),
    ],
)
def test_a_model_type_that_does_not_fit_the_visitor_names_the_field(
    register: str, limit: int | None, property_type: PropertyType | None, field: str, reason: str
) -> None:
    with pytest.raises(ModelValidationError) as caught:
        Encoding.from_visitor(visitor(register, None, limit), property_type)
    assert [problem.path for problem in caught.value.problems] == [field]
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    ("data_type", "limit", "scale", "value", "reason"),
    [
        ("float", 1, "0.1", 3276.8, "out of range -32768..32767"),
        ("float", 1, "0.1", -3276.9, "out of range"),
        ("uint16", 1, "1", -1, "out of range 0..65535"),
        ("int", 2, "1", 2**31, "out of range"),
        ("int", 1, "1", math.nan, "finite"),
        ("int", 1, "1", "12", "expected a number"),
        ("float32", 2, "1", 1e39, "does not fit a float32"),
        ("string", 1, "1", "abc", "do not fit 1 register"),
        ("string", 1, "1", 12, "expected string"),
        ("boolean", 1, "1", 2, "expected true/false"),
    ],
)
def test_values_that_do_not_fit_are_refused(
    data_type: str, limit: int, scale: str, value: object, reason: str
) -> None:
    enc = encoding("HoldingRegister", data_type, limit, scale)
    with pytest.raises(ValueEncodeError, match=reason):
        enc.encode(value)  # type: ignore[arg-type]


@given(
    layout=st.sampled_from(LAYOUTS),
    swaps=st.sampled_from(SWAPS),
    words=st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4),
)
def test_any_registers_survive_decode_then_encode(
    layout: tuple[str, int, ModbusDataType], swaps: tuple[bool, bool], words: list[int]
) -> None:
    data_type, limit, _ = layout
    enc = encoding("HoldingRegister", data_type, limit, 1, *swaps)
    value = enc.decode(words[:limit])
    if isinstance(value, float) and math.isnan(value):
        return  # NaN payload bits are not preserved through Python floats
    assert enc.encode(value) == tuple(words[:limit])


@given(swaps=st.sampled_from(SWAPS), words=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=8))
def test_swaps_reorder_like_kubeedge(swaps: tuple[bool, bool], words: list[int]) -> None:
    is_swap, is_register_swap = swaps
    enc = encoding("HoldingRegister", "bytes", len(words), 1, is_swap, is_register_swap)
    expected = list(reversed(words)) if is_register_swap else list(words)
    if is_swap:
        expected = [((word & 0xFF) << 8) | (word >> 8) for word in expected]
    assert enc.decode(words) == b"".join(word.to_bytes(2, "big") for word in expected)

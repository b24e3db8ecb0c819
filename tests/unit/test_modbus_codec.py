"""The Modbus codec: every dataType x limit x isSwap x isRegisterSwap x scale, known vectors and errors."""

from __future__ import annotations

import itertools
import math
import struct
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mappers.modbus.codec import Encoding, RawType, Table
from mappers.modbus.errors import EncodingConfigError, ValueEncodeError

# (dataType, limit) pairs KubeEdge users and edgetwin's explicit types write, with the raw type they mean.
LAYOUTS = [
    ("int", 1, RawType.INT16),
    ("int", 2, RawType.INT32),
    ("int", 4, RawType.INT64),
    ("float", 1, RawType.INT16),
    ("float", 2, RawType.FLOAT32),
    ("float", 4, RawType.FLOAT64),
    ("double", 1, RawType.INT16),
    ("double", 2, RawType.FLOAT32),
    ("double", 4, RawType.FLOAT64),
    ("int16", 1, RawType.INT16),
    ("uint16", 1, RawType.UINT16),
    ("int32", 2, RawType.INT32),
    ("uint32", 2, RawType.UINT32),
    ("int64", 4, RawType.INT64),
    ("float32", 2, RawType.FLOAT32),
    ("float64", 4, RawType.FLOAT64),
]
SCALES = ["1", "0.1", "10", "0.01"]
SWAPS = list(itertools.product([False, True], repeat=2))

INTEGER_RANGES = {
    RawType.INT16: (-(2**15), 2**15 - 1),
    RawType.UINT16: (0, 2**16 - 1),
    RawType.INT32: (-(2**31), 2**31 - 1),
    RawType.UINT32: (0, 2**32 - 1),
    RawType.INT64: (-(2**63), 2**63 - 1),
}


def _raw_samples(raw: RawType, scale: str) -> list[int | float]:
    if raw in INTEGER_RANGES:
        low, high = INTEGER_RANGES[raw]
        if Decimal(scale) != Decimal(scale).to_integral_value():
            # A scaled reading is a float: keep the raw value within a double's 53-bit mantissa.
            low, high = max(low, -(2**53)), min(high, 2**53)
        return [low, low + 1, 0, 1, 215, high - 1, high]
    big = 3.0e37 if raw is RawType.FLOAT32 else 1.5e300
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
    data_type: str, limit: int, raw: RawType, scale: str, is_swap: bool, is_register_swap: bool
) -> None:
    enc = Encoding.from_visitor("HoldingRegister", data_type, limit, scale, is_swap, is_register_swap)
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
    enc = Encoding.from_visitor("HoldingRegister", data_type, limit, 1, is_swap, is_register_swap)
    decoded = enc.decode(enc.encode(value))
    # Strings lose their NUL padding; bytes keep the register's full width.
    assert decoded == (value if isinstance(value, str) else value.ljust(2 * limit, b"\x00"))


@pytest.mark.parametrize(
    "register", ["CoilRegister", "DiscreteInputRegister", "HoldingRegister", "InputRegister"]
)
@pytest.mark.parametrize(("is_swap", "is_register_swap"), SWAPS)
def test_boolean_round_trip(register: str, is_swap: bool, is_register_swap: bool) -> None:
    enc = Encoding.from_visitor(register, "boolean", 1, 1, is_swap, is_register_swap)
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
    enc = Encoding.from_visitor("InputRegister", data_type, limit, scale, is_swap, is_register_swap)
    assert enc.decode(words) == value
    assert enc.encode(value) == words


def test_float32_reads_as_its_shortest_decimal() -> None:
    enc = Encoding.from_visitor("HoldingRegister", "float32")
    words = struct.unpack(">HH", struct.pack(">f", 21.3))
    assert enc.decode(words) == 21.3


def test_scaled_reading_is_exact_decimal() -> None:
    enc = Encoding.from_visitor("HoldingRegister", "int16", scale=0.1)
    assert enc.decode([3]) == 0.3  # not 0.30000000000000004
    assert enc.encode(0.3) == (3,)


def test_write_rounds_half_to_even_after_scaling() -> None:
    enc = Encoding.from_visitor("HoldingRegister", "float", 1, "0.1")
    assert enc.encode(21.55) == (216,)
    assert enc.encode(21.45) == (214,)


def test_numbers_given_as_strings() -> None:
    enc = Encoding.from_visitor("HoldingRegister", "float", 1, "0.1")
    assert enc.scale == Decimal("0.1")


def test_limit_defaults_by_type() -> None:
    assert Encoding.from_visitor("HoldingRegister", "int").count == 1
    assert Encoding.from_visitor("HoldingRegister", "float").raw is RawType.FLOAT32
    assert Encoding.from_visitor("HoldingRegister", "double").raw is RawType.FLOAT64
    assert Encoding.from_visitor("HoldingRegister", "uint32").count == 2
    assert Encoding.from_visitor("CoilRegister", "int").decode([1]) == 1
    assert Encoding.from_visitor("HoldingRegister", "FLOAT", 2).raw is RawType.FLOAT32


def test_tables() -> None:
    assert Table.COIL.is_bits
    assert Table.COIL.writable
    assert Table.COIL.max_read == 2000
    assert not Table.INPUT.writable
    assert Table.INPUT.max_read == 125
    assert not Table.DISCRETE_INPUT.writable


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
        ("HoldingRegister", "int", 1, 0, "scale"),
        ("HoldingRegister", "int", 1, "abc", "scale"),
        ("HoldingRegister", "int", 1, "inf", "scale"),
        ("CoilRegister", "float", 1, 1, "dataType"),
        ("CoilRegister", "boolean", 2, 1, "limit"),
    ],
)
def test_bad_visitor_names_the_field(
    register: str, data_type: str, limit: int | None, scale: object, field: str
) -> None:
    with pytest.raises(EncodingConfigError) as caught:
        Encoding.from_visitor(register, data_type, limit, scale)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert field in str(caught.value)


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
    enc = Encoding.from_visitor("HoldingRegister", data_type, limit, scale)
    with pytest.raises(ValueEncodeError, match=reason):
        enc.encode(value)  # type: ignore[arg-type]


@given(
    layout=st.sampled_from(LAYOUTS),
    swaps=st.sampled_from(SWAPS),
    words=st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4),
)
def test_any_registers_survive_decode_then_encode(
    layout: tuple[str, int, RawType], swaps: tuple[bool, bool], words: list[int]
) -> None:
    data_type, limit, _ = layout
    enc = Encoding.from_visitor("HoldingRegister", data_type, limit, 1, *swaps)
    value = enc.decode(words[:limit])
    if isinstance(value, float) and math.isnan(value):
        return  # NaN payload bits are not preserved through Python floats
    assert enc.encode(value) == tuple(words[:limit])


@given(swaps=st.sampled_from(SWAPS), words=st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=8))
def test_swaps_reorder_like_kubeedge(swaps: tuple[bool, bool], words: list[int]) -> None:
    is_swap, is_register_swap = swaps
    enc = Encoding.from_visitor("HoldingRegister", "bytes", len(words), 1, is_swap, is_register_swap)
    expected = list(reversed(words)) if is_register_swap else list(words)
    if is_swap:
        expected = [((word & 0xFF) << 8) | (word >> 8) for word in expected]
    assert enc.decode(words) == b"".join(word.to_bytes(2, "big") for word in expected)

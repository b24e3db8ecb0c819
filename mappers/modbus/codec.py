"""Modbus registers <-> values, as KubeEdge's visitor ``dataType`` / ``limit`` / ``scale`` / ``isSwap`` /
``isRegisterSwap`` describe them (CONTRACTS.md §5).

Decoding: the property's words are taken big-endian, their order is reversed when ``isRegisterSwap``,
then the two bytes of each word are swapped when ``isSwap``; the bytes are read as the raw type below and
multiplied by ``scale``. Encoding is the exact inverse: value / scale, rounded half-to-even for integer raw
types and checked against the raw type's range, then packed and reordered the same way (both reorderings are
involutions and commute, so one function serves both directions).

Raw type from ``dataType`` and ``limit`` (``limit`` counts registers; for coils and discrete inputs, bits):

============================  =======  ==========================================================
dataType                      limit    raw
============================  =======  ==========================================================
int                           1, 2, 4  int16, int32, int64 (two's complement, see below)
float, double                 1        int16, then x scale: KubeEdge's ``float, limit 1, scale 0.1``
float, double                 2        IEEE-754 float32
float, double                 4        IEEE-754 float64
boolean                       1        register != 0 (coils and discrete inputs: the bit)
string                        n        2n bytes of UTF-8, trailing NUL and space padding dropped
bytes                         n        2n bytes
int16 uint16 int32 uint32     -        as named; ``limit`` may be omitted and must match the width
int64 float32 float64
============================  =======  ==========================================================

Without ``limit``, int and boolean take 1 register, float 2 and double 4. Which combinations are valid is
device_models' rule (:class:`~device_models.ModbusVisitorConfig` checks them, naming the field); the codec
only lays out what a validated visitor describes.

KubeEdge's Go mapper reads ``int`` as unsigned; edgetwin reads it as signed, which is what the temperatures
and set points of real devices need. Counters above 32767 should say ``uint16`` / ``uint32``.
"""

from __future__ import annotations

import functools
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from device_models import ModbusDataType, ModbusRegister, ModbusVisitorConfig, PropertyType
from mappers.modbus.errors import ValueDecodeError
from mappers.sdk.errors import ValueEncodeError

ModbusValue = int | float | bool | str | bytes
"""What a property decodes to; the SDK turns it into the twin's string form."""

_FLOAT32_MAX = struct.unpack(">f", b"\x7f\x7f\xff\xff")[0]


_STRUCTS = {
    ModbusDataType.INT16: struct.Struct(">h"),
    ModbusDataType.UINT16: struct.Struct(">H"),
    ModbusDataType.INT32: struct.Struct(">i"),
    ModbusDataType.UINT32: struct.Struct(">I"),
    ModbusDataType.INT64: struct.Struct(">q"),
    ModbusDataType.FLOAT32: struct.Struct(">f"),
    ModbusDataType.FLOAT64: struct.Struct(">d"),
}
# The layout of KubeEdge's types by register count (device_models allows only these counts).
_SCALED_OR_IEEE = {1: ModbusDataType.INT16, 2: ModbusDataType.FLOAT32, 4: ModbusDataType.FLOAT64}
_BY_COUNT = {
    ModbusDataType.INT: {1: ModbusDataType.INT16, 2: ModbusDataType.INT32, 4: ModbusDataType.INT64},
    ModbusDataType.FLOAT: _SCALED_OR_IEEE,
    ModbusDataType.DOUBLE: _SCALED_OR_IEEE,
    ModbusDataType.BOOLEAN: {1: ModbusDataType.BOOLEAN},
}


def _reorder(data: bytes, is_swap: bool, is_register_swap: bool) -> bytes:
    """Reverse the word order (isRegisterSwap) and swap the bytes of each word (isSwap)."""
    words = [data[i : i + 2] for i in range(0, len(data), 2)]
    if is_register_swap:
        words.reverse()
    if is_swap:
        words = [word[::-1] for word in words]
    return b"".join(words)


def _shortest_float32(value: float) -> float:
    """The shortest decimal that reads back as the same float32 (21.3 rather than 21.299999237060547)."""
    if not math.isfinite(value):
        return value
    packed = struct.pack(">f", value)
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack(">f", candidate) == packed:
            return candidate
    return value  # pragma: no cover - 9 significant digits always round-trip a float32


@functools.cache
def _decimal_scale(scale: float) -> Decimal:
    # repr is the shortest decimal of the float, so a scale of 0.1 is exactly 0.1. Cached: thousands of
    # properties share a handful of scales.
    return Decimal(repr(scale))


def _raw_type(register: ModbusRegister, data_type: ModbusDataType, count: int) -> ModbusDataType:
    if register.is_bit:
        # The bit itself, as true / false or as the integer 0 / 1.
        return ModbusDataType.BOOLEAN if data_type is ModbusDataType.BOOLEAN else ModbusDataType.UINT16
    # Explicit types (int16 ... float64), string and bytes are laid out as they are named.
    return _BY_COUNT[data_type][count] if data_type in _BY_COUNT else data_type


@dataclass(frozen=True, slots=True)
class Encoding:
    """How one property sits in one table: raw type, units (registers or bits), scale and swaps.

    ``raw`` is how the bytes are laid out: an explicit type (int16 ... float64), boolean, string or bytes,
    never one of KubeEdge's width-less int, float or double.
    """

    register: ModbusRegister
    raw: ModbusDataType
    count: int
    scale: Decimal = Decimal(1)
    is_swap: bool = False
    is_register_swap: bool = False

    @classmethod
    def from_visitor(
        cls, visitor: ModbusVisitorConfig, property_type: PropertyType | None = None
    ) -> Encoding:
        """The layout ``visitor`` describes; without a visitor ``dataType``, ``property_type`` gives it.

        ``visitor`` was validated by device_models; only the DeviceModel type can still be at odds with it:
        raises :class:`~device_models.ModelValidationError` (paths inside configData) then.
        """
        typed = visitor.with_model_type(property_type)
        assert typed.data_type is not None  # with_model_type always sets one (narrows for mypy)
        raw = _raw_type(typed.register_type, typed.data_type, typed.count)
        scale = _decimal_scale(typed.scale)
        return cls(typed.register_type, raw, typed.count, scale, typed.is_swap, typed.is_register_swap)

    def decode(self, data: Sequence[int]) -> ModbusValue:
        """Turn the property's registers (or bits, as 0/1) into its value."""
        if self.register.is_bit:
            return bool(data[0]) if self.raw is ModbusDataType.BOOLEAN else int(bool(data[0]))
        raw_bytes = struct.pack(f">{len(data)}H", *data)
        if self.is_swap or self.is_register_swap:
            raw_bytes = _reorder(raw_bytes, self.is_swap, self.is_register_swap)
        if self.raw is ModbusDataType.BOOLEAN:
            return any(raw_bytes)
        if self.raw is ModbusDataType.BYTES:
            return raw_bytes
        if self.raw is ModbusDataType.STRING:
            try:
                return raw_bytes.rstrip(b"\x00 ").decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueDecodeError(raw_bytes, "not UTF-8 text") from exc
        (number,) = _STRUCTS[self.raw].unpack(raw_bytes)
        if self.raw is ModbusDataType.FLOAT32:
            number = _shortest_float32(number)
        return self._scaled(number)

    def _scaled(self, number: int | float) -> int | float:
        if self.scale == 1:
            return number
        if isinstance(number, int) and self.scale == self.scale.to_integral_value():
            return number * int(self.scale)
        if isinstance(number, float) and not math.isfinite(number):
            return number * float(self.scale)
        # Decimal keeps 215 x 0.1 at 21.5 instead of 21.500000000000004.
        return float(Decimal(repr(number) if isinstance(number, float) else number) * self.scale)

    def encode(self, value: ModbusValue) -> tuple[int, ...]:
        """Turn a value into the registers (or bits, as 0/1) to write; raises :class:`ValueEncodeError`."""
        if self.register.is_bit or self.raw is ModbusDataType.BOOLEAN:
            if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
                return (int(value),)
            raise ValueEncodeError(value, "expected true/false (or 0/1)")
        if self.raw in (ModbusDataType.STRING, ModbusDataType.BYTES):
            return self._words(self._padded(value))
        if isinstance(value, (str, bytes)):
            raise ValueEncodeError(value, f"expected a number for {self.raw.value}")
        if self.raw in (ModbusDataType.FLOAT32, ModbusDataType.FLOAT64):
            number = self._unscaled_float(value)
            if self.raw is ModbusDataType.FLOAT32 and math.isfinite(number) and abs(number) > _FLOAT32_MAX:
                raise ValueEncodeError(value, f"{number!r} does not fit a float32")
            return self._words(_STRUCTS[self.raw].pack(number))
        integer = self._unscaled_integer(value)
        bits = 8 * _STRUCTS[self.raw].size
        low, high = (
            (0, 2**bits - 1)
            if self.raw.value.startswith("uint")
            else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        )
        if not low <= integer <= high:
            scaled = f" (value / scale {self.scale} = {integer})" if self.scale != 1 else ""
            raise ValueEncodeError(value, f"out of range {low}..{high} of {self.raw.value}{scaled}")
        return self._words(_STRUCTS[self.raw].pack(integer))

    def _unscaled_float(self, value: int | float) -> float:
        if self.scale == 1 or (isinstance(value, float) and not math.isfinite(value)):
            return float(value)
        return float(Decimal(repr(value) if isinstance(value, float) else value) / self.scale)

    def _unscaled_integer(self, value: int | float) -> int:
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueEncodeError(value, f"{self.raw.value} holds finite numbers only")
        exact = Decimal(repr(value) if isinstance(value, float) else value) / self.scale
        return int(exact.to_integral_value(rounding=ROUND_HALF_EVEN))

    def _padded(self, value: ModbusValue) -> bytes:
        if isinstance(value, str):
            data = value.encode("utf-8")
        elif isinstance(value, bytes):
            data = value
        else:
            raise ValueEncodeError(value, f"expected {self.raw.value}")
        room = 2 * self.count
        if len(data) > room:
            raise ValueEncodeError(
                value, f"{len(data)} bytes do not fit {self.count} register(s) ({room} bytes)"
            )
        return data.ljust(room, b"\x00")

    def _words(self, data: bytes) -> tuple[int, ...]:
        ordered = _reorder(data, self.is_swap, self.is_register_swap)
        return tuple(int.from_bytes(ordered[i : i + 2], "big") for i in range(0, len(ordered), 2))

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

KubeEdge's Go mapper reads ``int`` as unsigned; edgetwin reads it as signed, which is what the temperatures
and set points of real devices need. Counters above 32767 should say ``uint16`` / ``uint32``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from enum import StrEnum

from mappers.modbus.errors import EncodingConfigError, ValueDecodeError, ValueEncodeError

ModbusValue = int | float | bool | str | bytes
"""What a property decodes to; the SDK turns it into the twin's string form."""

MAX_READ_REGISTERS = 125
MAX_READ_BITS = 2000
_FLOAT32_MAX = struct.unpack(">f", b"\x7f\x7f\xff\xff")[0]


class Table(StrEnum):
    """The four Modbus data tables, named as KubeEdge's visitor ``register`` field names them."""

    COIL = "CoilRegister"
    DISCRETE_INPUT = "DiscreteInputRegister"
    HOLDING = "HoldingRegister"
    INPUT = "InputRegister"

    @property
    def is_bits(self) -> bool:
        """Whether the table holds single bits (coils, discrete inputs) rather than 16-bit registers."""
        return self in (Table.COIL, Table.DISCRETE_INPUT)

    @property
    def writable(self) -> bool:
        """Whether a master may write the table (coils and holding registers)."""
        return self in (Table.COIL, Table.HOLDING)

    @property
    def max_read(self) -> int:
        """Most units one read request may carry (Modbus spec: 2000 bits or 125 registers)."""
        return MAX_READ_BITS if self.is_bits else MAX_READ_REGISTERS


class RawType(StrEnum):
    """How the bytes of a property are laid out on the device."""

    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    BOOLEAN = "boolean"
    STRING = "string"
    BYTES = "bytes"


# struct format and width in registers of each fixed-width raw type.
_FIXED: dict[RawType, tuple[str, int]] = {
    RawType.INT16: ("h", 1),
    RawType.UINT16: ("H", 1),
    RawType.INT32: ("i", 2),
    RawType.UINT32: ("I", 2),
    RawType.INT64: ("q", 4),
    RawType.FLOAT32: ("f", 2),
    RawType.FLOAT64: ("d", 4),
}
_STRUCTS = {raw: struct.Struct(">" + fmt) for raw, (fmt, _width) in _FIXED.items()}
_INTEGER_BY_LIMIT = {1: RawType.INT16, 2: RawType.INT32, 4: RawType.INT64}
_FLOATING_BY_LIMIT = {1: RawType.INT16, 2: RawType.FLOAT32, 4: RawType.FLOAT64}
_DEFAULT_LIMIT = {"int": 1, "float": 2, "double": 4, "boolean": 1}
_GENERIC_TYPES = ("int", "float", "double", "boolean", "string", "bytes")
_INTEGER_NAMES = frozenset({"int", "int16", "uint16", "int32", "uint32", "int64"})


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


def _parse_scale(scale: float | int | str | Decimal) -> Decimal:
    try:
        parsed = Decimal(str(scale).strip())
    except InvalidOperation as exc:
        raise EncodingConfigError("scale", scale, "not a number") from exc
    if not parsed.is_finite() or parsed == 0:
        raise EncodingConfigError("scale", scale, "must be a finite number other than 0")
    return parsed


def _raw_type(table: Table, data_type: str, limit: int | None) -> tuple[RawType, int]:
    kind = data_type.strip().lower()
    if table.is_bits:
        if limit not in (None, 1):
            raise EncodingConfigError("limit", limit, f"a {table.value} property reads exactly 1 bit")
        if kind == "boolean":
            return RawType.BOOLEAN, 1
        if kind in _INTEGER_NAMES:
            return RawType.UINT16, 1  # the bit as 0 / 1
        raise EncodingConfigError("dataType", data_type, f"a {table.value} bit decodes as boolean or int")
    if kind in _FIXED:
        raw = RawType(kind)
        width = _FIXED[raw][1]
        if limit not in (None, width):
            raise EncodingConfigError("limit", limit, f"{kind} takes {width} register(s)")
        return raw, width
    if kind not in _GENERIC_TYPES:
        known = ", ".join((*_GENERIC_TYPES, *_FIXED))
        raise EncodingConfigError("dataType", data_type, f"not one of {known}")
    if limit is None:
        if kind not in _DEFAULT_LIMIT:
            raise EncodingConfigError("limit", limit, f"{kind} needs a limit (number of registers)")
        limit = _DEFAULT_LIMIT[kind]
    if not 1 <= limit <= MAX_READ_REGISTERS:
        raise EncodingConfigError("limit", limit, f"must be 1..{MAX_READ_REGISTERS} registers")
    if kind == "string":
        return RawType.STRING, limit
    if kind == "bytes":
        return RawType.BYTES, limit
    by_limit = {"int": _INTEGER_BY_LIMIT, "boolean": {1: RawType.BOOLEAN}}.get(kind, _FLOATING_BY_LIMIT)
    if limit not in by_limit:
        allowed = " or ".join(str(n) for n in by_limit)
        raise EncodingConfigError("limit", limit, f"{kind} takes {allowed} register(s)")
    return by_limit[limit], limit


@dataclass(frozen=True)
class Encoding:
    """How one property sits in one table: raw type, units (registers or bits), scale and swaps."""

    table: Table
    raw: RawType
    count: int
    scale: Decimal = Decimal(1)
    is_swap: bool = False
    is_register_swap: bool = False

    @classmethod
    def from_visitor(
        cls,
        register: str,
        data_type: str,
        limit: int | None = None,
        scale: float | int | str | Decimal = 1,
        is_swap: bool = False,
        is_register_swap: bool = False,
    ) -> Encoding:
        """Build from KubeEdge's visitor fields; raises :class:`EncodingConfigError` naming the bad field."""
        try:
            table = Table(register)
        except ValueError as exc:
            names = ", ".join(t.value for t in Table)
            raise EncodingConfigError("register", register, f"not one of {names}") from exc
        raw, count = _raw_type(table, data_type, limit)
        return cls(table, raw, count, _parse_scale(scale), is_swap, is_register_swap)

    def decode(self, data: Sequence[int]) -> ModbusValue:
        """Turn the property's registers (or bits, as 0/1) into its value."""
        if self.table.is_bits:
            return bool(data[0]) if self.raw is RawType.BOOLEAN else int(bool(data[0]))
        raw_bytes = struct.pack(f">{len(data)}H", *data)
        if self.is_swap or self.is_register_swap:
            raw_bytes = _reorder(raw_bytes, self.is_swap, self.is_register_swap)
        if self.raw is RawType.BOOLEAN:
            return any(raw_bytes)
        if self.raw is RawType.BYTES:
            return raw_bytes
        if self.raw is RawType.STRING:
            try:
                return raw_bytes.rstrip(b"\x00 ").decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueDecodeError(raw_bytes, "not UTF-8 text") from exc
        (number,) = _STRUCTS[self.raw].unpack(raw_bytes)
        if self.raw is RawType.FLOAT32:
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
        if self.table.is_bits or self.raw is RawType.BOOLEAN:
            if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
                return (int(value),)
            raise ValueEncodeError(value, "expected true/false (or 0/1)")
        if self.raw in (RawType.STRING, RawType.BYTES):
            return self._words(self._padded(value))
        if isinstance(value, (str, bytes)):
            raise ValueEncodeError(value, f"expected a number for {self.raw.value}")
        if self.raw in (RawType.FLOAT32, RawType.FLOAT64):
            number = self._unscaled_float(value)
            if self.raw is RawType.FLOAT32 and math.isfinite(number) and abs(number) > _FLOAT32_MAX:
                raise ValueEncodeError(value, f"{number!r} does not fit a float32")
            return self._words(_STRUCTS[self.raw].pack(number))
        integer = self._unscaled_integer(value)
        bits = 16 * _FIXED[self.raw][1]
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

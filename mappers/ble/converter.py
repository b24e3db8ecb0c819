"""Characteristic bytes ↔ property values: KubeEdge's BLE data converter, ``dataWrite``, and plain types.

Reading with a ``dataConverter``, as KubeEdge's BLE mapper does (``ConvertReadData`` in kubeedge/mappers-go):
the bytes ``startIndex`` to ``endIndex`` (both included; taken from ``endIndex`` down to ``startIndex`` when
``startIndex`` is the larger, which reads a little-endian GATT value) form an unsigned number, the first byte
taken the most significant; it is shifted left by ``shiftLeft`` or, when there is none, right by
``shiftRight``; then each of ``orderOfOperations`` (Add, Subtract, Multiply, Divide) is applied in order.
A 0x2A6E temperature of 21.0 °C is 2100 hundredths = 0x0834, sent little-endian as ``34 08``: with
``startIndex: 1, endIndex: 0`` the bytes are taken as ``08 34`` = 2100, and Multiply 0.01 gives 21.0.

Where edgetwin differs from KubeEdge, on purpose: KubeEdge joins the *decimal* spelling of each byte and
parses the text (``08 34`` becomes "8" + "52", the number 852), which is right only for single bytes below
10; edgetwin reads the bytes as the binary number they are. Indices outside the value are an error naming
the property (KubeEdge's mapper panics). A result with operations is a float rounded to 12 significant
digits, so that 2090 * 0.01 reads 20.9 and not 20.900000000000002; without operations it stays an integer.

A characteristic with ``dataWrite`` whose value is one of the map's byte strings reads as that value's key
(the LED that was written ``01`` for ON reads ON). Otherwise, without a ``dataConverter``, a value is read by
the property's type: STRING as UTF-8 text, BYTES as they are
(hex in the twin), BOOLEAN true when any byte is non-zero, and numbers as KubeEdge's default converter reads
them (byte 0 alone).

Writing: with ``dataWrite``, the desired value must be one of its keys (compared as values of the property's
type, so "1.0" finds "1" on a FLOAT property) and its bytes are written; a value not in the map is refused.
Without ``dataWrite``: BYTES as they are, BOOLEAN as ``01`` / ``00``, STRING as UTF-8, INT little-endian
(GATT's byte order) in as many bytes as the converter's indices span, else the fewest of 1, 2, 4 or 8
(signed when negative), FLOAT as an IEEE 754 single and DOUBLE as a double, little-endian.
"""

from __future__ import annotations

import struct

from device_models import BleDataConverter, BleOperationType, BleVisitorConfig, ModelProperty, PropertyType
from mappers.ble.errors import ValueDecodeError
from mappers.sdk import DeviceValue, ValueEncodeError

_SIGNIFICANT_DIGITS = 12
_INT_WIDTHS = (1, 2, 4, 8)
_DEFAULT_CONVERTER = BleDataConverter()


def convert(data: bytes, converter: BleDataConverter) -> int | float:
    """The number KubeEdge's data converter makes of ``data`` (see the module docstring)."""
    start, end = converter.start_index, converter.end_index
    if max(start, end) >= len(data):
        raise ValueDecodeError(
            data,
            f"dataConverter indices {start}..{end} are outside the {len(data)}-byte value "
            f"(valid indices 0..{len(data) - 1})"
            if data
            else "the characteristic's value is empty",
        )
    chunk = data[start : end + 1] if start <= end else data[end : start + 1][::-1]
    number = int.from_bytes(chunk, "big")
    if converter.shift_left:
        number <<= converter.shift_left
    elif converter.shift_right:
        number >>= converter.shift_right
    if not converter.order_of_operations:
        return number
    result = float(number)
    for operation in converter.order_of_operations:
        if operation.operation_type is BleOperationType.ADD:
            result += operation.operation_value
        elif operation.operation_type is BleOperationType.SUBTRACT:
            result -= operation.operation_value
        elif operation.operation_type is BleOperationType.MULTIPLY:
            result *= operation.operation_value
        else:  # Divide; a zero divisor is refused when the configData is read
            result /= operation.operation_value
    return float(f"{result:.{_SIGNIFICANT_DIGITS}g}")


def decode(model: ModelProperty, visitor: BleVisitorConfig, data: bytes) -> DeviceValue:
    """The value of a property whose characteristic holds ``data`` (see the module docstring)."""
    for key, written in visitor.data_write.items():
        if written == data:
            try:
                return model.parse_value(key)
            except ValueError:
                break  # a key of the wrong type: read the bytes as if there were no map
    kind, converter = model.type, visitor.data_converter
    if converter is not None:
        number = convert(data, converter)
        return number != 0 if kind is PropertyType.BOOLEAN else number
    if kind is PropertyType.STRING:
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise ValueDecodeError(
                data, "is not UTF-8 text (give a dataConverter to read a number)"
            ) from None
    if kind is PropertyType.BOOLEAN:
        return any(data)
    if kind in (PropertyType.BYTES, PropertyType.STREAM):
        return data
    return convert(data, _DEFAULT_CONVERTER)


def encode(value: DeviceValue, model: ModelProperty, visitor: BleVisitorConfig) -> bytes:
    """The bytes to write for ``value`` (see the module docstring); :class:`ValueEncodeError` says why not."""
    if visitor.data_write:
        for key, data in visitor.data_write.items():
            try:
                if model.parse_value(key) == value:
                    return data
            except ValueError:
                continue
        known = ", ".join(visitor.data_write)
        raise ValueEncodeError(value, f"is not one of the values of dataWrite ({known})")
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        return b"\x01" if value else b"\x00"
    if isinstance(value, str):
        return value.encode()
    if model.type is PropertyType.INT and isinstance(value, int):
        return _integer(value, visitor.data_converter)
    fmt = "<f" if model.type is PropertyType.FLOAT else "<d"
    try:
        return struct.pack(fmt, value)
    except (OverflowError, struct.error) as exc:
        raise ValueEncodeError(value, f"does not fit a {'float' if fmt == '<f' else 'double'}") from exc


def _integer(value: int, converter: BleDataConverter | None) -> bytes:
    signed = value < 0
    if converter is not None:
        widths: tuple[int, ...] = (abs(converter.end_index - converter.start_index) + 1,)
    else:
        widths = _INT_WIDTHS
    for width in widths:
        try:
            return value.to_bytes(width, "little", signed=signed)
        except OverflowError:
            continue
    raise ValueEncodeError(value, f"does not fit in {widths[-1]} bytes")

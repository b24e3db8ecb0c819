"""Node values ↔ driver values: the built-in scalar types of OPC-UA, in both directions.

Reading, a variant becomes a :data:`~mappers.sdk.DeviceValue` the SDK turns into the twin's string: Boolean
→ bool, the eight integer types → int, Float and Double → float (a Float as the shortest decimal that reads
back as the same 32-bit value, so "0.1" stays "0.1"), String → str, DateTime → RFC 3339 UTC text
(``2024-05-06T07:08:09.5Z``), ByteString → bytes (hex in the twin). Arrays, nulls and other types raise
:class:`~mappers.opcua.errors.ValueDecodeError` with the reason.

Writing, a value parsed from a desired twin string becomes a variant of the type the node declares, after
range checks: an INT property may write any integer type, a STRING property a DateTime, and so on.
"""

from __future__ import annotations

import datetime
import math
import re
import struct
from typing import Any

from asyncua import ua

from mappers.opcua.errors import ValueDecodeError
from mappers.sdk import DeviceValue
from mappers.sdk.errors import ValueEncodeError

INTEGER_RANGES: dict[ua.VariantType, tuple[int, int]] = {
    ua.VariantType.SByte: (-(2**7), 2**7 - 1),
    ua.VariantType.Byte: (0, 2**8 - 1),
    ua.VariantType.Int16: (-(2**15), 2**15 - 1),
    ua.VariantType.UInt16: (0, 2**16 - 1),
    ua.VariantType.Int32: (-(2**31), 2**31 - 1),
    ua.VariantType.UInt32: (0, 2**32 - 1),
    ua.VariantType.Int64: (-(2**63), 2**63 - 1),
    ua.VariantType.UInt64: (0, 2**64 - 1),
}
_FLOAT32_MAX = struct.unpack("<f", b"\xff\xff\x7f\x7f")[0]
SCALAR_TYPES = frozenset(
    {
        ua.VariantType.Boolean,
        *INTEGER_RANGES,
        ua.VariantType.Float,
        ua.VariantType.Double,
        ua.VariantType.String,
        ua.VariantType.DateTime,
        ua.VariantType.ByteString,
    }
)
"""The variant types the mapper maps to and from twin values."""
_INTEGER_TEXT = re.compile(r"^[+-]?\d+$")


def decode(variant: ua.Variant) -> DeviceValue:
    """The driver value of a node's variant; :class:`ValueDecodeError` when a twin cannot hold it."""
    value: Any = variant.Value
    if variant.is_array or isinstance(value, list | tuple):
        raise ValueDecodeError(f"is an array of {variant.VariantType.name}; twin values are scalars")
    if value is None:
        raise ValueDecodeError("has no value (null)")
    vtype = variant.VariantType
    if vtype not in SCALAR_TYPES:
        raise ValueDecodeError(f"is a {vtype.name}, not a built-in scalar type a twin can hold")
    if vtype is ua.VariantType.Float:
        return float32_text_value(value)
    if vtype is ua.VariantType.DateTime:
        return rfc3339(value)
    if isinstance(value, bool | int | float | str | bytes):
        return value
    raise ValueDecodeError(f"holds a {type(value).__name__} as {vtype.name}")


def float32_text_value(value: float) -> float:
    """The float with the fewest digits that is the same 32-bit float as ``value``."""
    packed = struct.pack("<f", value)
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack("<f", candidate) == packed:
            return candidate
    return value


def rfc3339(moment: datetime.datetime) -> str:
    """``moment`` in UTC as RFC 3339 text with a ``Z`` (a twin value cannot hold ``+00:00``)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC).replace(tzinfo=None).isoformat() + "Z"


def encode(value: DeviceValue, vtype: ua.VariantType) -> ua.Variant:
    """A variant of type ``vtype`` holding ``value``; :class:`ValueEncodeError` says why it cannot."""
    if vtype is ua.VariantType.Boolean:
        return ua.Variant(_boolean(value), vtype)
    if vtype in INTEGER_RANGES:
        return ua.Variant(_integer(value, vtype), vtype)
    if vtype in (ua.VariantType.Float, ua.VariantType.Double):
        return ua.Variant(_real(value, vtype), vtype)
    if vtype is ua.VariantType.String:
        if isinstance(value, bytes):
            raise ValueEncodeError(value, "bytes cannot be written to a String node")
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return ua.Variant(text, vtype)
    if vtype is ua.VariantType.DateTime:
        return ua.Variant(_datetime(value), vtype)
    if vtype is ua.VariantType.ByteString and isinstance(value, bytes):
        return ua.Variant(value, vtype)
    if vtype is ua.VariantType.ByteString:
        raise ValueEncodeError(value, "a ByteString node takes a BYTES property (hex digits)")
    raise ValueEncodeError(value, f"the node's data type {vtype.name} is not a built-in scalar type")


def _boolean(value: DeviceValue) -> bool:
    if isinstance(value, bool):
        return value
    if value in ("true", "false"):
        return value == "true"
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise ValueEncodeError(value, "is not a boolean (Boolean node)")


def _integer(value: DeviceValue, vtype: ua.VariantType) -> int:
    whole = (
        (isinstance(value, int) and not isinstance(value, bool))
        or (isinstance(value, float) and value.is_integer())
        or (isinstance(value, str) and _INTEGER_TEXT.match(value) is not None)
    )
    if not whole or isinstance(value, bytes):
        raise ValueEncodeError(value, f"is not an integer ({vtype.name} node)")
    number = int(value)
    low, high = INTEGER_RANGES[vtype]
    if not low <= number <= high:
        raise ValueEncodeError(value, f"is out of range {low}..{high} of {vtype.name}")
    return number


def _real(value: DeviceValue, vtype: ua.VariantType) -> float:
    if isinstance(value, bool | bytes):
        raise ValueEncodeError(value, f"is not a number ({vtype.name} node)")
    try:
        number = float(value)
    except ValueError:
        raise ValueEncodeError(value, f"is not a number ({vtype.name} node)") from None
    if not math.isfinite(number):
        raise ValueEncodeError(value, "is not a finite number")
    if vtype is ua.VariantType.Float:
        try:
            struct.pack("<f", number)
        except OverflowError:
            raise ValueEncodeError(value, f"is out of range of Float (±{_FLOAT32_MAX:g})") from None
    return number


def _datetime(value: DeviceValue) -> datetime.datetime:
    if not isinstance(value, str):
        raise ValueEncodeError(value, "a DateTime node takes RFC 3339 text, like 2024-05-06T07:08:09Z")
    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise ValueEncodeError(value, "is not RFC 3339 date and time, like 2024-05-06T07:08:09Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC)

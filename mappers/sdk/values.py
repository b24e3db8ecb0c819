"""Conversions between driver values and the twin's strings, and the checks on desired values.

Twin values are strings typed by ``metadata.type`` (CONTRACTS.md §1): ``int``, ``float``, ``boolean``
(exactly ``true`` / ``false``) or ``string``. A reported value must also match the twin's value pattern, so a
value the edge would refuse is caught here, as a property error, instead of being published.
"""

from __future__ import annotations

from device_models import PropertyType, TwinValidationError, validate_value
from mappers.sdk.driver import DeviceValue, PropertyConfig, Reading
from mappers.sdk.errors import PropertyError, ValueRefusedError


def _text(value: DeviceValue, twin_type: str) -> str:
    if twin_type == "boolean":
        if isinstance(value, (str, bytes)):
            raise ValueError(f"{value!r} is not a boolean")
        return "true" if value else "false"
    if twin_type == "int":
        if isinstance(value, (str, bytes)):
            raise ValueError(f"{value!r} is not a number")
        # A scaled reading (raw x 0.1) reported as an INT property: the nearest integer.
        return str(round(value))
    if twin_type == "float":
        if isinstance(value, (str, bytes)):
            raise ValueError(f"{value!r} is not a number")
        return str(int(value)) if isinstance(value, bool) else repr(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else repr(value)


def format_reported(device: str, prop: PropertyConfig, value: DeviceValue) -> str:
    """The twin string of a value read from the device; :class:`PropertyError` if the twin cannot hold it."""
    try:
        text = _text(value, prop.twin_type)
        validate_value(prop.name, prop.twin_type, text)
    except (ValueError, TwinValidationError) as exc:
        reason = exc.reason if isinstance(exc, TwinValidationError) else str(exc)
        raise PropertyError(
            device, prop.name, f"read {value!r} cannot be reported as {prop.twin_type}: {reason}"
        ) from exc
    return text


def reported_text(device: str, prop: PropertyConfig, reading: Reading | None) -> str:
    """The twin string of a driver's reading; raises the reading's error, or one if it is missing."""
    if reading is None:
        raise PropertyError(device, prop.name, "the driver returned no reading")
    if isinstance(reading, PropertyError):
        raise reading
    return format_reported(device, prop, reading)


def parse_desired(device: str, prop: PropertyConfig, text: str) -> DeviceValue:
    """The value to write for a desired twin string, after the DeviceModel's checks.

    Raises :class:`ValueRefusedError` when the property is ReadOnly, the text does not parse as the
    property's type, or the number lies outside the model's ``minimum`` .. ``maximum``. BYTES values are
    written as hex digits.
    """
    if not prop.model.writable:
        raise ValueRefusedError(device, prop.name, text, "the property is ReadOnly in its DeviceModel")
    try:
        value = prop.model.parse_value(text)
    except ValueError as exc:
        raise ValueRefusedError(device, prop.name, text, str(exc)) from exc
    if prop.model.type is not PropertyType.BYTES:
        return value
    try:
        return bytes.fromhex(text)
    except ValueError as exc:
        raise ValueRefusedError(
            device, prop.name, text, "is not hex digits (BYTES are written as hex)"
        ) from exc

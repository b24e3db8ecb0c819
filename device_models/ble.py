"""Bluetooth Low Energy configData of a device (MAC address) and of a property visitor (characteristic)."""

from __future__ import annotations

import enum
import re
import uuid
from typing import Annotated, Self

from pydantic import BeforeValidator, Field, field_validator, model_validator

from device_models.base import ConfigModel
from device_models.problems import field_error

_MAC = re.compile(r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$")
_SHORT_UUID = re.compile(r"^(0x)?([0-9A-Fa-f]{4}|[0-9A-Fa-f]{8})$")
# Short (16/32-bit) UUIDs are offsets in the Bluetooth base UUID.
_BASE_UUID_SUFFIX = "-0000-1000-8000-00805f9b34fb"
_HEX_SEPARATORS = re.compile(r"[\s:-]")
_BYTE_MAX = 255


class BleProtocolConfig(ConfigModel):
    """``spec.protocol.configData`` of a BLE device: its ``macAddress`` or, [ext], the ``deviceName`` it
    advertises (for peripherals with a random address; the first device heard with that name is taken)."""

    mac_address: str = ""
    """The peripheral's address, e.g. A4:C1:38:0D:7E:21 (normalized to upper case with colons)."""
    device_name: str = ""
    """[ext] The advertised name to scan for when there is no ``macAddress``."""

    @field_validator("mac_address")
    @classmethod
    def _mac(cls, value: str) -> str:
        if value and not _MAC.match(value):
            raise ValueError("is not a MAC address (six hex bytes like A4:C1:38:0D:7E:21)")
        return value.replace("-", ":").upper()

    @model_validator(mode="after")
    def _address_or_name(self) -> Self:
        if not self.mac_address and not self.device_name:
            raise ValueError("needs macAddress (or deviceName, the name the device advertises)")
        return self


def _to_bytes(value: object) -> object:
    """Read a ``dataWrite`` value: hex ("01", "0x0102", "01 02"), a list of byte values or one byte value."""
    if isinstance(value, bool):
        raise ValueError("is not a hex string or a list of byte values")  # noqa: TRY004 - pydantic wants ValueError
    if isinstance(value, int):
        value = [value]
    if isinstance(value, list):
        if not all(
            isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= _BYTE_MAX for item in value
        ):
            raise ValueError("is not a list of byte values (0 to 255)")
        return bytes(value)
    if isinstance(value, str):
        digits = _HEX_SEPARATORS.sub("", value.removeprefix("0x").removeprefix("0X"))
        try:
            return bytes.fromhex(digits)
        except ValueError:
            raise ValueError("is not a hex string (like 01, 0x0102 or 01 02)") from None
    return value


class BleOperationType(enum.StrEnum):
    """Arithmetic applied to a value read from a characteristic."""

    ADD = "Add"
    SUBTRACT = "Subtract"
    MULTIPLY = "Multiply"
    DIVIDE = "Divide"


class BleOperation(ConfigModel):
    """One step of the conversion of a characteristic's bytes into a value."""

    operation_type: BleOperationType
    operation_value: float = Field(allow_inf_nan=False)

    @model_validator(mode="after")
    def _no_division_by_zero(self) -> Self:
        if self.operation_type is BleOperationType.DIVIDE and self.operation_value == 0:
            raise field_error("operationValue", "divides by zero", self.operation_value)
        return self


class BleDataConverter(ConfigModel):
    """How to turn a characteristic's bytes into a number, as KubeEdge's BLE mapper does.

    Bytes ``startIndex`` to ``endIndex`` (inclusive; reversed order when start > end) form a big-endian
    integer, shifted left then right, then each operation is applied in order.
    """

    start_index: int = Field(default=0, ge=0)
    end_index: int = Field(default=0, ge=0)
    shift_left: int | None = Field(default=None, ge=0)
    shift_right: int | None = Field(default=None, ge=0)
    order_of_operations: list[BleOperation] = Field(default_factory=list)


class BleVisitorConfig(ConfigModel):
    """``spec.properties[].visitors.configData`` of a BLE device property."""

    characteristic_uuid: str = Field(alias="characteristicUUID")
    """The GATT characteristic: a full UUID or a 16-bit short form like 2a6e (normalized to the full form)."""
    data_write: dict[str, Annotated[bytes, BeforeValidator(_to_bytes)]] = Field(
        default_factory=dict, alias="dataWrite"
    )
    """Property value → bytes to write for it, e.g. {"ON": "01", "OFF": "00"}."""
    data_converter: BleDataConverter | None = None
    """How to turn the bytes read into a number."""

    @field_validator("characteristic_uuid")
    @classmethod
    def _uuid(cls, value: str) -> str:
        if match := _SHORT_UUID.match(value):
            return f"{int(match.group(2), 16):08x}{_BASE_UUID_SUFFIX}"
        try:
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError("is not a UUID (full form, or a 16-bit short form like 2a6e)") from None

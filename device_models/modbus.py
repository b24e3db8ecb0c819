"""Modbus (TCP and RTU) configData of a device and of a property visitor, with KubeEdge's names and values."""

from __future__ import annotations

import enum
import ipaddress
import re
from typing import Annotated, Self

from pydantic import AliasChoices, BeforeValidator, Field, ValidationError, field_validator, model_validator

from device_models.base import ConfigModel
from device_models.device_model import PropertyType
from device_models.errors import ModelValidationError
from device_models.problems import Problem, field_error, problems_from_validation_error

ADDRESS_SPACE = 65536
"""Modbus addresses (offsets) of each register type run from 0 to 65535."""
MAX_BITS_PER_READ = 2000
"""Coils / discrete inputs one request may read (Modbus application protocol, function 1 and 2)."""
MAX_REGISTERS_PER_READ = 125
"""Holding / input registers one request may read (function 3 and 4)."""

_HOST_NAME = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


def _case_insensitive(choices: type[enum.StrEnum], synonyms: dict[str, str] | None = None) -> BeforeValidator:
    """Accept an enum value in any letter case (and a few synonyms), as KubeEdge's mappers do."""
    lookup = {member.value.lower(): member.value for member in choices}
    lookup.update(synonyms or {})

    def normalize(value: object) -> object:
        return lookup.get(value.lower(), value) if isinstance(value, str) else value

    return BeforeValidator(normalize)


class CommunicateMode(enum.StrEnum):
    """Modbus transport."""

    TCP = "TCP"
    RTU = "RTU"


class Parity(enum.StrEnum):
    """Serial line parity."""

    NONE = "none"
    EVEN = "even"
    ODD = "odd"

    @property
    def letter(self) -> str:
        """The letter pyserial / pymodbus use: N, E or O."""
        return self.value[0].upper()


class ModbusRegister(enum.StrEnum):
    """The four Modbus data tables."""

    COIL = "CoilRegister"
    DISCRETE_INPUT = "DiscreteInputRegister"
    HOLDING = "HoldingRegister"
    INPUT = "InputRegister"

    @property
    def writable(self) -> bool:
        """Coils and holding registers can be written; discrete inputs and input registers cannot."""
        return self in (ModbusRegister.COIL, ModbusRegister.HOLDING)

    @property
    def is_bit(self) -> bool:
        """Coils and discrete inputs hold one bit each; the others 16 bits."""
        return self in (ModbusRegister.COIL, ModbusRegister.DISCRETE_INPUT)

    @property
    def max_per_read(self) -> int:
        """Most bits or registers one read request may carry."""
        return MAX_BITS_PER_READ if self.is_bit else MAX_REGISTERS_PER_READ


class ModbusDataType(enum.StrEnum):
    """The output type of a visitor: KubeEdge's (width from ``limit``) or edgetwin's explicit widths."""

    INT = "int"
    FLOAT = "float"
    DOUBLE = "double"
    STRING = "string"
    BOOLEAN = "boolean"
    BYTES = "bytes"
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"

    @property
    def registers(self) -> int | None:
        """How many 16-bit registers an explicit-width type takes; None for KubeEdge's types."""
        return _EXPLICIT_WIDTHS.get(self)


_EXPLICIT_WIDTHS = {
    ModbusDataType.INT16: 1,
    ModbusDataType.UINT16: 1,
    ModbusDataType.INT32: 2,
    ModbusDataType.UINT32: 2,
    ModbusDataType.FLOAT32: 2,
    ModbusDataType.INT64: 4,
    ModbusDataType.FLOAT64: 4,
}
# The register counts (``limit``) KubeEdge's numeric and boolean types come in, and the one without a limit:
# int 16/32/64-bit, float and double a scaled int16 or an IEEE float32/float64, boolean one register.
_KUBEEDGE_WIDTHS = {
    ModbusDataType.INT: (1, 2, 4),
    ModbusDataType.FLOAT: (1, 2, 4),
    ModbusDataType.DOUBLE: (1, 2, 4),
    ModbusDataType.BOOLEAN: (1,),
}
_DEFAULT_LIMITS = {
    ModbusDataType.INT: 1,
    ModbusDataType.FLOAT: 2,
    ModbusDataType.DOUBLE: 4,
    ModbusDataType.BOOLEAN: 1,
}
# A coil or discrete input reads as true/false, or as the integer 0/1.
_BIT_TYPES = (None, ModbusDataType.BOOLEAN, ModbusDataType.INT)


class ModbusProtocolConfig(ConfigModel):
    """``spec.protocol.configData`` of a Modbus device.

    Without ``communicateMode``, a config that names a ``serialPort`` is RTU and any other TCP (older KubeEdge
    mappers left the mode out).
    """

    communicate_mode: Annotated[CommunicateMode, _case_insensitive(CommunicateMode)]
    """TCP or RTU."""
    ip: str | None = None
    """TCP: the device's IP address or host name."""
    port: int = Field(default=502, ge=1, le=65535)
    """TCP: the device's port."""
    slave_id: int = Field(default=1, alias="slaveID", ge=0, le=255)
    """The unit (slave) id."""
    serial_port: str | None = Field(
        default=None,
        alias="serialPort",
        validation_alias=AliasChoices("serialPort", "serialName", "serial_port"),
    )
    """RTU: the serial device, e.g. /dev/ttyUSB0 (KubeEdge's newer mappers call it serialName)."""
    baud_rate: int = Field(default=9600, gt=0)
    """RTU: line speed."""
    data_bits: int = Field(default=8, ge=5, le=8)
    """RTU: 5 to 8."""
    parity: Annotated[Parity, _case_insensitive(Parity, {"n": "none", "e": "even", "o": "odd"})] = Parity.NONE
    """RTU: none, even or odd."""
    stop_bits: int = Field(default=1, ge=1, le=2)
    """RTU: 1 or 2."""

    @model_validator(mode="before")
    @classmethod
    def _default_mode(cls, data: object) -> object:
        if isinstance(data, dict) and "communicateMode" not in data and "communicate_mode" not in data:
            serial = any(key in data for key in ("serialPort", "serialName", "serial_port"))
            return {**data, "communicateMode": CommunicateMode.RTU if serial else CommunicateMode.TCP}
        return data

    @field_validator("ip")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not _HOST_NAME.match(value):
                raise ValueError("is not an IP address or host name") from None
        return value

    @model_validator(mode="after")
    def _transport_settings(self) -> Self:
        if self.communicate_mode is CommunicateMode.TCP and not self.ip:
            raise field_error("ip", "is required when communicateMode is TCP")
        if self.communicate_mode is CommunicateMode.RTU and not self.serial_port:
            raise field_error("serialPort", "is required when communicateMode is RTU")
        return self


def _zero_scale_is_one(value: object) -> object:
    # KubeEdge's mappers treat a zero (unset) scale as no scaling.
    return 1.0 if value in (0, "0") else value


class ModbusVisitorConfig(ConfigModel):
    """``spec.properties[].visitors.configData`` of a Modbus device property.

    ``dataType`` is the output type. With KubeEdge's types the width comes from ``limit`` (1 register =
    16-bit integer, 2 = 32-bit, an IEEE float when the type is float, 4 = 64-bit; without a limit int and
    boolean take 1, float 2 and double 4; string and bytes need one); explicit types (int16 ... float64) fix
    the width themselves. A coil or discrete input property is one bit, read as boolean or int. The raw value
    is multiplied by ``scale``. Words are reversed when ``isRegisterSwap``, then the bytes of each word
    swapped when ``isSwap``; big-endian otherwise. Without ``dataType`` the DeviceModel property's type
    decides (:meth:`with_model_type`).
    """

    register_type: ModbusRegister = Field(alias="register")
    """CoilRegister, DiscreteInputRegister, HoldingRegister or InputRegister."""
    offset: int = Field(ge=0, le=ADDRESS_SPACE - 1)
    """Address of the first register (0-based)."""
    limit: int | None = Field(default=None, ge=1)
    """How many registers (or bits) to read; defaults to the data type's width, else 1."""
    scale: Annotated[float, BeforeValidator(_zero_scale_is_one)] = Field(default=1.0, allow_inf_nan=False)
    """Factor applied to the raw value when read (and divided out when written)."""
    is_swap: bool = False
    """Swap the two bytes of each register."""
    is_register_swap: bool = False
    """Reverse the order of the registers (word order)."""
    data_type: Annotated[ModbusDataType, _case_insensitive(ModbusDataType, {"bool": "boolean"})] | None = None
    """Output type; None leaves it to the DeviceModel property type."""
    maximum: float | None = Field(default=None, alias="max", allow_inf_nan=False)
    """Largest value accepted (clamps readings and rejects writes above)."""
    minimum: float | None = Field(default=None, alias="min", allow_inf_nan=False)
    """Smallest value accepted."""

    @property
    def count(self) -> int:
        """How many registers (or bits) one read of this property takes."""
        if self.limit is not None:
            return self.limit
        if self.data_type is None:
            return 1
        return self.data_type.registers or _DEFAULT_LIMITS.get(self.data_type, 1)

    def with_model_type(self, property_type: PropertyType | None) -> ModbusVisitorConfig:
        """This visitor with a ``dataType``: its own, else the DeviceModel property's (INT reads as int ...).

        The visitor is checked again with that type, since its width depends on it. Raises
        :class:`ModelValidationError` with paths inside configData (``dataType``, ``limit``, ``offset``).
        """
        if self.data_type is not None:
            return self
        try:
            data_type = ModbusDataType((property_type or "").lower())
        except ValueError:
            missing = f"is required for a {property_type} property" if property_type else "is required"
            raise ModelValidationError([Problem("dataType", missing)]) from None
        try:
            return self.model_validate({**self.model_dump(by_alias=True), "dataType": data_type})
        except ValidationError as exc:
            raise ModelValidationError(problems_from_validation_error(exc)) from exc

    @model_validator(mode="after")
    def _fits(self) -> Self:
        register, data_type, limit = self.register_type, self.data_type, self.limit
        if register.is_bit and data_type not in _BIT_TYPES:
            raise field_error(
                "dataType", f"needs 16-bit registers, but {register} holds single bits", data_type
            )
        width = data_type.registers if data_type else None
        if width is not None and limit is not None and limit != width:
            raise field_error(
                "limit", f"does not match dataType {data_type}, which takes {width} registers", limit
            )
        if self.count > register.max_per_read:
            raise field_error(
                "limit",
                f"is more than one Modbus request can read from {register} ({register.max_per_read})",
                self.count,
            )
        if register.is_bit and self.count != 1:
            raise field_error("limit", f"must be 1: a {register} property is one bit", limit)
        if data_type in _KUBEEDGE_WIDTHS and self.count not in _KUBEEDGE_WIDTHS[data_type]:
            widths = " or ".join(str(count) for count in _KUBEEDGE_WIDTHS[data_type])
            raise field_error(
                "limit", f"does not fit dataType {data_type}: {data_type} takes {widths} register(s)", limit
            )
        if data_type in (ModbusDataType.STRING, ModbusDataType.BYTES) and limit is None:
            raise field_error("limit", f"is required with dataType {data_type} (how many registers)")
        if self.offset + self.count > ADDRESS_SPACE:
            raise field_error(
                "offset",
                f"+ {self.count} register(s) goes past the last address {ADDRESS_SPACE - 1}",
                self.offset,
            )
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise field_error("min", f"is above max {self.maximum}", self.minimum)
        return self

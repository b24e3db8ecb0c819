"""``devices.kubeedge.io/v1beta1`` DeviceModel: the properties a kind of device has, with type and access."""

from __future__ import annotations

import enum
import math
import re
from typing import Final, Literal

from pydantic import Field

from device_models.base import KubeModel
from device_models.meta import KubeObject

GROUP: Final = "devices.kubeedge.io"
API_VERSION: Final = "devices.kubeedge.io/v1beta1"

_INTEGER = re.compile(r"^[+-]?\d+$")
_DECIMAL = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class PropertyType(enum.StrEnum):
    """Type of a device property, as KubeEdge spells it (``STREAM`` is KubeEdge's camera stream type)."""

    INT = "INT"
    FLOAT = "FLOAT"
    DOUBLE = "DOUBLE"
    STRING = "STRING"
    BOOLEAN = "BOOLEAN"
    BYTES = "BYTES"
    STREAM = "STREAM"

    @property
    def is_numeric(self) -> bool:
        """True for INT, FLOAT and DOUBLE, whose values can have a minimum and a maximum."""
        return self in (PropertyType.INT, PropertyType.FLOAT, PropertyType.DOUBLE)

    @property
    def twin_type(self) -> str:
        """The twin ``metadata.type`` of values of this type: int, float, boolean or string."""
        return _TWIN_TYPES.get(self, "string")


_TWIN_TYPES = {
    PropertyType.INT: "int",
    PropertyType.FLOAT: "float",
    PropertyType.DOUBLE: "float",
    PropertyType.BOOLEAN: "boolean",
}


class AccessMode(enum.StrEnum):
    """Whether a property can be written (a desired value) or only read."""

    READ_WRITE = "ReadWrite"
    READ_ONLY = "ReadOnly"


def parse_typed_value(property_type: PropertyType, text: str) -> int | float | bool | str:
    """Parse a twin value (always a string on the wire) as ``property_type``; ValueError says why not."""
    if property_type is PropertyType.INT:
        if not _INTEGER.match(text):
            raise ValueError("is not an integer (INT)")
        return int(text)
    if property_type in (PropertyType.FLOAT, PropertyType.DOUBLE):
        if not _DECIMAL.match(text) or not math.isfinite(number := float(text)):
            raise ValueError(f"is not a number ({property_type})")
        return number
    if property_type is PropertyType.BOOLEAN:
        if text not in ("true", "false"):
            raise ValueError("is not a boolean (exactly true or false)")
        return text == "true"
    return text


class ModelProperty(KubeModel):
    """One property of a device model (temperature, setpoint, ...)."""

    name: str
    """The property name; a Device's properties refer to it."""
    description: str | None = None
    """What the property is."""
    type: PropertyType
    """Type of the property's values."""
    access_mode: AccessMode | None = None
    """ReadWrite (the default) or ReadOnly; only ReadWrite properties take a desired value."""
    minimum: str | None = None
    """Smallest allowed value (numeric types), as a string like KubeEdge's."""
    maximum: str | None = None
    """Largest allowed value (numeric types), as a string like KubeEdge's."""
    unit: str | None = None
    """Unit of the values, e.g. "Cel"."""

    @property
    def writable(self) -> bool:
        """True unless the property is ReadOnly."""
        return self.access_mode is not AccessMode.READ_ONLY

    def parse_value(self, text: str) -> int | float | bool | str:
        """Parse ``text`` as this property's type and check it lies within minimum..maximum.

        Raises ValueError with the reason (e.g. "is above the maximum 35"); bounds that do not parse are
        ignored here (:func:`device_models.check_device_model` reports them).
        """
        value = parse_typed_value(self.type, text)
        if self.type.is_numeric and not isinstance(value, bool | str):
            low, high = self.bounds()
            if low is not None and value < low:
                raise ValueError(f"is below the minimum {self.minimum}")
            if high is not None and value > high:
                raise ValueError(f"is above the maximum {self.maximum}")
        return value

    def bounds(self) -> tuple[float | None, float | None]:
        """The numeric (minimum, maximum), None where absent or not a number of this property's type."""
        return self._bound(self.minimum), self._bound(self.maximum)

    def _bound(self, text: str | None) -> float | None:
        if text is None or not self.type.is_numeric:
            return None
        try:
            value = parse_typed_value(self.type, text)
        except ValueError:
            return None
        return float(value)


class DeviceModelSpec(KubeModel):
    """The blueprint of a kind of device: its properties and the protocol used to reach it."""

    properties: list[ModelProperty] = Field(default_factory=list)
    """The properties every device of this model has; names are unique."""
    protocol: str | None = None
    """Name of the protocol the devices speak (modbus, opcua, ble, or a customized one)."""


class DeviceModel(KubeObject):
    """A ``devices.kubeedge.io/v1beta1`` DeviceModel."""

    api_version: Literal["devices.kubeedge.io/v1beta1"] = API_VERSION
    kind: Literal["DeviceModel"] = "DeviceModel"
    spec: DeviceModelSpec = Field(default_factory=DeviceModelSpec)

    @property
    def property_names(self) -> list[str]:
        """The names of the model's properties, in order."""
        return [prop.name for prop in self.spec.properties]

    def get_property(self, name: str) -> ModelProperty | None:
        """The property called ``name``, or None."""
        return next((prop for prop in self.spec.properties if prop.name == name), None)

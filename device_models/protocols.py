"""The protocols edgetwin knows, and the typed configData of a device or of one of its property visitors.

An unknown protocol is not an error: its configData is kept as it is (:class:`CustomizedConfig`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Final

from pydantic import ValidationError

from device_models.ble import BleProtocolConfig, BleVisitorConfig
from device_models.device import Device
from device_models.errors import ModelValidationError
from device_models.modbus import ModbusProtocolConfig, ModbusVisitorConfig
from device_models.opcua import OpcUaProtocolConfig, OpcUaVisitorConfig
from device_models.problems import Location, Problem, format_path, problems_from_validation_error

MODBUS: Final = "modbus"
OPCUA: Final = "opcua"
BLE: Final = "ble"

_ALIASES = {"modbus": MODBUS, "opcua": OPCUA, "opc-ua": OPCUA, "ble": BLE, "bluetooth": BLE}


@dataclasses.dataclass(frozen=True)
class CustomizedConfig:
    """The configData of a protocol edgetwin does not know, kept as it is."""

    protocol_name: str
    config_data: Mapping[str, Any]


DeviceProtocolConfig = ModbusProtocolConfig | OpcUaProtocolConfig | BleProtocolConfig | CustomizedConfig
"""The typed ``spec.protocol.configData`` of a device."""
PropertyProtocolConfig = ModbusVisitorConfig | OpcUaVisitorConfig | BleVisitorConfig | CustomizedConfig
"""The typed ``spec.properties[].visitors.configData`` of a device property."""

_DEVICE_CONFIGS: dict[str, type[ModbusProtocolConfig | OpcUaProtocolConfig | BleProtocolConfig]] = {
    MODBUS: ModbusProtocolConfig,
    OPCUA: OpcUaProtocolConfig,
    BLE: BleProtocolConfig,
}
_VISITOR_CONFIGS: dict[str, type[ModbusVisitorConfig | OpcUaVisitorConfig | BleVisitorConfig]] = {
    MODBUS: ModbusVisitorConfig,
    OPCUA: OpcUaVisitorConfig,
    BLE: BleVisitorConfig,
}


def canonical_protocol_name(name: str) -> str:
    """``modbus``, ``opcua`` or ``ble`` for the names (and aliases: opc-ua, bluetooth) edgetwin knows, else
    ``name`` unchanged."""
    return _ALIASES.get(name.lower(), name)


def is_known_protocol(name: str) -> bool:
    """True when edgetwin has a typed config (and a mapper) for the protocol called ``name``."""
    return canonical_protocol_name(name) in _DEVICE_CONFIGS


def parse_protocol_config(
    protocol_name: str,
    config_data: Mapping[str, Any],
    *,
    loc: Location = (),
    document: object = None,
    obj: str | None = None,
) -> DeviceProtocolConfig:
    """The typed device configData of ``protocol_name``; raises :class:`ModelValidationError` if invalid.

    ``loc`` is where the configData sits in ``document`` (the whole object, as a mapping) and ``obj`` names
    the object, for the problems' paths.
    """
    config_class = _DEVICE_CONFIGS.get(canonical_protocol_name(protocol_name))
    if config_class is None:
        return CustomizedConfig(protocol_name, config_data)
    try:
        return config_class.model_validate(config_data)
    except ValidationError as exc:
        raise _config_error(exc, loc, document, obj) from exc


def parse_visitor_config(
    protocol_name: str,
    config_data: Mapping[str, Any],
    *,
    loc: Location = (),
    document: object = None,
    obj: str | None = None,
) -> PropertyProtocolConfig:
    """The typed visitor configData of ``protocol_name``; raises :class:`ModelValidationError` if invalid."""
    config_class = _VISITOR_CONFIGS.get(canonical_protocol_name(protocol_name))
    if config_class is None:
        return CustomizedConfig(protocol_name, config_data)
    try:
        return config_class.model_validate(config_data)
    except ValidationError as exc:
        raise _config_error(exc, loc, document, obj) from exc


def _config_error(
    exc: ValidationError, loc: Location, document: object, obj: str | None
) -> ModelValidationError:
    return ModelValidationError(
        problem.located(obj=obj) for problem in problems_from_validation_error(exc, document, loc)
    )


def device_protocol_config(device: Device) -> DeviceProtocolConfig:
    """The typed ``spec.protocol.configData`` of ``device``.

    Raises :class:`ModelValidationError` naming the field (``spec.protocol.configData.port`` ...) when the
    device has no protocol or its configData is invalid for a known protocol.
    """
    if device.spec.protocol is None:
        raise ModelValidationError(
            [Problem("spec.protocol", "is required to reach the device", obj=device.label)]
        )
    return parse_protocol_config(
        device.spec.protocol.protocol_name,
        device.spec.protocol.config_data,
        loc=("spec", "protocol", "configData"),
        document=device.to_manifest(),
        obj=device.label,
    )


def visitor_protocol_name(device: Device, property_name: str) -> str | None:
    """The protocol of a property's visitor: its own ``protocolName``, else the device's."""
    prop = device.get_property(property_name)
    own = prop.visitors.protocol_name if prop and prop.visitors else None
    return own or device.protocol_name


def property_visitor_config(device: Device, property_name: str) -> PropertyProtocolConfig:
    """The typed ``visitors.configData`` of the property ``property_name`` of ``device``.

    Raises :class:`ModelValidationError` naming the field when the property does not exist, has no visitor
    or protocol, or its configData is invalid for a known protocol.
    """
    index = next((i for i, prop in enumerate(device.spec.properties) if prop.name == property_name), None)
    if index is None:
        raise ModelValidationError(
            [Problem("spec.properties", "has no property of that name", property_name, obj=device.label)]
        )
    prop = device.spec.properties[index]
    document = device.to_manifest()
    visitors_loc: tuple[str | int, ...] = ("spec", "properties", index, "visitors")
    protocol_name = visitor_protocol_name(device, property_name)
    if prop.visitors is None or protocol_name is None:
        missing = "visitors" if prop.visitors is None else "visitors.protocolName"
        raise ModelValidationError(
            [
                Problem(
                    format_path(visitors_loc[:-1], document) + f".{missing}",
                    "is required to reach the property",
                    obj=device.label,
                )
            ]
        )
    return parse_visitor_config(
        protocol_name,
        prop.visitors.config_data,
        loc=(*visitors_loc, "configData"),
        document=document,
        obj=device.label,
    )

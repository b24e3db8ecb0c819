"""Checks beyond the schema: what the API server would accept but edgetwin cannot use, and cross-checks of a
Device against its DeviceModel (the cloud DeviceController runs these too).

Each check returns a list of :class:`Problem`; an empty list means valid. Warnings do not make an object
invalid.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from device_models.base import ConfigModel
from device_models.device import Device
from device_models.device_model import DeviceModel, parse_typed_value
from device_models.errors import ModelValidationError
from device_models.modbus import ModbusVisitorConfig
from device_models.problems import NO_VALUE, Location, Problem, Severity, format_path
from device_models.protocols import canonical_protocol_name, parse_protocol_config, parse_visitor_config

PROPERTY_NAME = re.compile(r"^[a-zA-Z0-9\-_.,:/@#]{1,128}$")
"""What a property name may look like: it names a twin in MQTT messages (KubeEdge's rule)."""


@dataclasses.dataclass
class _Report:
    """Collects the problems of one object, with paths rendered against its manifest."""

    document: dict[str, Any]
    obj: str
    problems: list[Problem] = dataclasses.field(default_factory=list)

    def __call__(
        self, loc: Location, message: str, value: object = NO_VALUE, severity: Severity = "error"
    ) -> None:
        self.problems.append(Problem(format_path(loc, self.document), message, value, severity, obj=self.obj))


def _check_names(names: list[str], loc: Location, report: _Report, *, pattern: bool) -> None:
    seen: set[str] = set()
    for index, name in enumerate(names):
        if pattern and not PROPERTY_NAME.match(name):
            report(
                (*loc, index, "name"),
                "is not a valid property name (1 to 128 of a-z A-Z 0-9 - _ . , : / @ #)",
                name,
            )
        if name in seen:
            report((*loc, index, "name"), "is defined twice", name)
        seen.add(name)


def check_device_model(model: DeviceModel) -> list[Problem]:
    """Problems of a DeviceModel on its own: property names, and minimum / maximum of numeric properties."""
    report = _Report(model.to_manifest(), model.label)
    _check_names(model.property_names, ("spec", "properties"), report, pattern=True)
    for index, prop in enumerate(model.spec.properties):
        loc = ("spec", "properties", index)
        for field in ("minimum", "maximum"):
            text = getattr(prop, field)
            if text is None:
                continue
            if not prop.type.is_numeric:
                report((*loc, field), f"is ignored for a {prop.type} property", text, "warning")
                continue
            try:
                parse_typed_value(prop.type, text)
            except ValueError as exc:
                report((*loc, field), str(exc), text)
        low, high = prop.bounds()
        if low is not None and high is not None and low > high:
            report((*loc, "minimum"), f"is above the maximum {prop.maximum}", prop.minimum)
    return report.problems


def check_device(device: Device) -> list[Problem]:
    """Problems of a Device on its own: property and method names, and the typed configData of its protocol
    and of every property visitor (unknown configData keys are warnings)."""
    report = _Report(device.to_manifest(), device.label)
    _check_names(device.property_names, ("spec", "properties"), report, pattern=True)
    _check_protocol(device, report)
    for index in range(len(device.spec.properties)):
        _check_visitor(device, index, report)
    _check_methods(device, report)
    if device.status:
        for index, twin in enumerate(device.status.twins):
            if device.get_property(twin.property_name) is None:
                report(
                    ("status", "twins", index, "propertyName"),
                    "is not a property in spec.properties",
                    twin.property_name,
                    "warning",
                )
    return report.problems


def _check_protocol(device: Device, report: _Report) -> None:
    protocol = device.spec.protocol
    if protocol is None:
        return
    loc = ("spec", "protocol", "configData")
    try:
        config = parse_protocol_config(
            protocol.protocol_name, protocol.config_data, loc=loc, document=report.document, obj=device.label
        )
    except ModelValidationError as exc:
        report.problems.extend(exc.problems)
        return
    _warn_unknown_keys(config, protocol.protocol_name, protocol.config_data, loc, report)


def _check_visitor(device: Device, index: int, report: _Report) -> None:
    prop = device.spec.properties[index]
    if prop.visitors is None:
        return
    loc: Location = ("spec", "properties", index, "visitors")
    own, of_device = prop.visitors.protocol_name, device.protocol_name
    if own is None and of_device is None:
        report((*loc, "protocolName"), "is required (the device has no spec.protocol)")
        return
    if own and of_device and canonical_protocol_name(own) != canonical_protocol_name(of_device):
        report((*loc, "protocolName"), f"does not match spec.protocol.protocolName {of_device!r}", own)
        return
    protocol_name = own or of_device or ""
    try:
        config = parse_visitor_config(
            protocol_name,
            prop.visitors.config_data,
            loc=(*loc, "configData"),
            document=report.document,
            obj=device.label,
        )
    except ModelValidationError as exc:
        report.problems.extend(exc.problems)
        return
    _warn_unknown_keys(config, protocol_name, prop.visitors.config_data, (*loc, "configData"), report)
    if isinstance(config, ModbusVisitorConfig) and prop.desired and not config.register_type.writable:
        report(
            ("spec", "properties", index, "desired", "value"),
            f"cannot be written: {config.register_type} is read-only",
            prop.desired.value,
        )


def _warn_unknown_keys(
    config: object, protocol_name: str, config_data: dict[str, Any], loc: Location, report: _Report
) -> None:
    if isinstance(config, ConfigModel):
        for key in config.unknown_keys:
            report(
                (*loc, key),
                f"is not a {protocol_name} setting edgetwin knows (ignored)",
                config_data[key],
                "warning",
            )


def _check_methods(device: Device, report: _Report) -> None:
    _check_names([method.name for method in device.spec.methods], ("spec", "methods"), report, pattern=False)
    for index, method in enumerate(device.spec.methods):
        for position, name in enumerate(method.property_names):
            if device.get_property(name) is None:
                report(
                    ("spec", "methods", index, "propertyNames", position),
                    "is not a property in spec.properties",
                    name,
                )


def check_device_against_model(device: Device, model: DeviceModel) -> list[Problem]:
    """Cross-checks of a Device with its DeviceModel.

    Every device property exists in the model; a desired value parses as the model's type and lies within
    its minimum..maximum; ReadOnly properties carry no desired value; the protocols agree.
    """
    report = _Report(device.to_manifest(), device.label)
    if model.id != device.model_id:
        report(
            ("spec", "deviceModelRef", "name"), f"refers to another model than {model.label}", device.model_id
        )
    protocol = device.protocol_name
    if (
        protocol
        and model.spec.protocol
        and canonical_protocol_name(protocol) != canonical_protocol_name(model.spec.protocol)
    ):
        report(
            ("spec", "protocol", "protocolName"),
            f"does not match the protocol {model.spec.protocol!r} of {model.label}",
            protocol,
        )
    for index, prop in enumerate(device.spec.properties):
        loc = ("spec", "properties", index)
        model_prop = model.get_property(prop.name)
        if model_prop is None:
            report((*loc, "name"), f"is not a property of {model.label}", prop.name)
            continue
        if prop.desired is None:
            continue
        if not model_prop.writable:
            report(
                (*loc, "desired", "value"),
                f"is a desired value, but the property is ReadOnly in {model.label}",
                prop.desired.value,
            )
            continue
        try:
            model_prop.parse_value(prop.desired.value)
        except ValueError as exc:
            report((*loc, "desired", "value"), str(exc), prop.desired.value)
    return report.problems

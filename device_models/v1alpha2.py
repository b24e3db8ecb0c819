"""Reading of the older ``devices.kubeedge.io/v1alpha2`` Device and DeviceModel, converted to v1beta1.

Where v1alpha2 had a place v1beta1 lacks, the conversion says so here:

* protocol: ``modbus`` + ``common.tcp`` / ``common.com`` become one ``modbus`` configData (communicateMode
  TCP / RTU); the other ``common`` settings and ``customizedValues`` are copied into configData as they are;
  ``bluetooth`` becomes protocol ``ble``; ``customizedProtocol`` keeps its name and configData.
* ``propertyVisitors[]`` become ``properties[]`` with ``visitors``; the desired values of ``status.twins[]``
  become ``properties[].desired`` (v1beta1 keeps desired state in the spec), reported values stay in the
  status. Properties that only have a twin become properties without visitors.
* ``nodeSelector``: the first value of the first ``In`` requirement is the ``nodeName`` (as KubeEdge's
  DeviceController read it).
* ``data.dataProperties`` become properties with ``reportToCloud: false`` (and ``pushMethod.mqtt.topic`` =
  ``data.dataTopic`` when set); their metadata has no v1beta1 place and is dropped. Twin properties get
  ``reportToCloud: true``.
* DeviceModel: ``type.<int|string|double|float|boolean|bytes>`` becomes ``type`` + ``accessMode`` +
  ``minimum`` / ``maximum`` (as strings) + ``unit``; ``defaultValue`` has no v1beta1 place and is dropped.
  v1alpha2 models name no protocol, so ``spec.protocol`` stays empty.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final, Literal, Self

from pydantic import Field, model_validator

from device_models.base import KubeModel
from device_models.ble import BleOperationType
from device_models.device import (
    Device,
    DeviceProperty,
    DeviceSpec,
    DeviceStatus,
    ProtocolConfig,
    Twin,
    TwinProperty,
    VisitorConfig,
)
from device_models.device_model import AccessMode, DeviceModel, DeviceModelSpec, ModelProperty, PropertyType
from device_models.meta import KubeObject, LocalObjectReference
from device_models.modbus import ModbusRegister
from device_models.problems import field_error
from device_models.protocols import BLE, MODBUS, OPCUA
from device_models.push_method import PushMethod, PushMethodMQTT

API_VERSION: Final = "devices.kubeedge.io/v1alpha2"


def _present(model: KubeModel) -> dict[str, Any]:
    """The fields set on ``model``, by their YAML names (what goes into a v1beta1 configData)."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


# --- Device -------------------------------------------------------------------------------------------------


class TwinPropertyV1Alpha2(KubeModel):
    """A desired or reported value."""

    value: str = ""
    metadata: dict[str, str] = Field(default_factory=dict)


class TwinV1Alpha2(KubeModel):
    """Desired and reported value of one property."""

    property_name: str
    desired: TwinPropertyV1Alpha2 | None = None
    reported: TwinPropertyV1Alpha2 | None = None


class DeviceStatusV1Alpha2(KubeModel):
    """Twins and connection state."""

    twins: list[TwinV1Alpha2] = Field(default_factory=list)
    state: str | None = None
    last_online: str | None = None


class ProtocolConfigOpcUA(KubeModel):
    """OPC-UA connection."""

    url: str | None = None
    user_name: str | None = None
    password: str | None = None
    security_policy: str | None = None
    security_mode: str | None = None
    certificate: str | None = None
    private_key: str | None = None
    timeout: int | None = None


class ProtocolConfigModbus(KubeModel):
    """Modbus unit id (the transport is in ``common``)."""

    slave_id: int | None = Field(default=None, alias="slaveID")


class ProtocolConfigCOM(KubeModel):
    """Serial line settings."""

    serial_port: str | None = None
    baud_rate: int | None = None
    data_bits: int | None = None
    parity: Literal["none", "even", "odd"] | None = None
    stop_bits: int | None = None


class ProtocolConfigTCP(KubeModel):
    """TCP address."""

    ip: str | None = None
    port: int | None = None


class ProtocolConfigCommon(KubeModel):
    """Transport and collection settings shared by the built-in protocols."""

    com: ProtocolConfigCOM | None = None
    tcp: ProtocolConfigTCP | None = None
    comm_type: str | None = None
    reconn_timeout: int | None = None
    reconn_retry_times: int | None = None
    collect_timeout: int | None = None
    collect_retry_times: int | None = None
    collect_type: Literal["sync", "async"] | None = None
    customized_values: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_transport(self) -> Self:
        if self.com is not None and self.tcp is not None:
            raise field_error("tcp", "cannot be set together with com")
        return self


class ProtocolConfigBluetooth(KubeModel):
    """BLE peripheral address."""

    mac_address: str | None = None


class ProtocolConfigCustomized(KubeModel):
    """A protocol of the user's own."""

    protocol_name: str
    config_data: dict[str, Any] = Field(default_factory=dict)


class ProtocolConfigV1Alpha2(KubeModel):
    """One of opcua, modbus, bluetooth, customizedProtocol (plus common)."""

    opcua: ProtocolConfigOpcUA | None = None
    modbus: ProtocolConfigModbus | None = None
    bluetooth: ProtocolConfigBluetooth | None = None
    common: ProtocolConfigCommon | None = None
    customized_protocol: ProtocolConfigCustomized | None = None

    @model_validator(mode="after")
    def _one_protocol(self) -> Self:
        chosen = [name for name in _PROTOCOL_MEMBERS if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise field_error(
                _alias(self, chosen[1]), f"cannot be set together with {_alias(self, chosen[0])}"
            )
        if not chosen and self.common is not None:
            raise field_error("common", "needs one of opcua, modbus, bluetooth, customizedProtocol")
        return self


_PROTOCOL_MEMBERS = ("opcua", "modbus", "bluetooth", "customized_protocol")


def _alias(model: KubeModel, field_name: str) -> str:
    return type(model).model_fields[field_name].alias or field_name


class VisitorConfigOPCUA(KubeModel):
    """OPC-UA node of a property."""

    node_id: str | None = Field(default=None, alias="nodeID")
    browse_name: str | None = None


class VisitorConfigModbus(KubeModel):
    """Modbus registers of a property."""

    register_type: ModbusRegister | None = Field(default=None, alias="register")
    offset: int | None = None
    limit: int | None = None
    scale: float | None = None
    is_swap: bool | None = None
    is_register_swap: bool | None = None


class BluetoothOperation(KubeModel):
    """One arithmetic step."""

    operation_type: BleOperationType | None = None
    operation_value: float | None = None


class BluetoothReadConverter(KubeModel):
    """How to turn bytes read into a number."""

    start_index: int | None = None
    end_index: int | None = None
    shift_left: int | None = None
    shift_right: int | None = None
    order_of_operations: list[BluetoothOperation] = Field(default_factory=list)


class VisitorConfigBluetooth(KubeModel):
    """BLE characteristic of a property."""

    characteristic_uuid: str | None = Field(default=None, alias="characteristicUUID")
    data_write: dict[str, Any] = Field(default_factory=dict)
    data_converter: BluetoothReadConverter | None = None


class VisitorConfigCustomized(KubeModel):
    """A property visitor of the user's own protocol."""

    protocol_name: str
    config_data: dict[str, Any] = Field(default_factory=dict)


class DevicePropertyVisitor(KubeModel):
    """How to reach one property."""

    property_name: str
    report_cycle: int | None = None
    collect_cycle: int | None = None
    customized_values: dict[str, Any] = Field(default_factory=dict)
    opcua: VisitorConfigOPCUA | None = None
    modbus: VisitorConfigModbus | None = None
    bluetooth: VisitorConfigBluetooth | None = None
    customized_protocol: VisitorConfigCustomized | None = None

    @model_validator(mode="after")
    def _one_protocol(self) -> Self:
        chosen = [name for name in _PROTOCOL_MEMBERS if getattr(self, name) is not None]
        if len(chosen) > 1:
            raise field_error(
                _alias(self, chosen[1]), f"cannot be set together with {_alias(self, chosen[0])}"
            )
        return self


class DataProperty(KubeModel):
    """A property whose data goes to the data topic rather than to a twin."""

    property_name: str
    metadata: dict[str, str] = Field(default_factory=dict)


class DeviceData(KubeModel):
    """Time-series properties, published on ``dataTopic``."""

    data_properties: list[DataProperty] = Field(default_factory=list)
    data_topic: str | None = None


class NodeSelectorRequirement(KubeModel):
    """``key operator values``."""

    key: str
    operator: str
    values: list[str] = Field(default_factory=list)


class NodeSelectorTerm(KubeModel):
    """Requirements that must all hold."""

    match_expressions: list[NodeSelectorRequirement] = Field(default_factory=list)
    match_fields: list[NodeSelectorRequirement] = Field(default_factory=list)


class NodeSelector(KubeModel):
    """Terms of which one must hold."""

    node_selector_terms: list[NodeSelectorTerm]


class DeviceSpecV1Alpha2(KubeModel):
    """A v1alpha2 Device's spec."""

    device_model_ref: LocalObjectReference
    protocol: ProtocolConfigV1Alpha2 | None = None
    property_visitors: list[DevicePropertyVisitor] = Field(default_factory=list)
    data: DeviceData | None = None
    node_selector: NodeSelector | None = None


class DeviceV1Alpha2(KubeObject):
    """A ``devices.kubeedge.io/v1alpha2`` Device."""

    api_version: Literal["devices.kubeedge.io/v1alpha2"] = API_VERSION
    kind: Literal["Device"] = "Device"
    spec: DeviceSpecV1Alpha2
    status: DeviceStatusV1Alpha2 | None = None


# --- DeviceModel --------------------------------------------------------------------------------------------


class PropertyTypeInt64(KubeModel):
    """An integer property."""

    access_mode: AccessMode | None = None
    default_value: int | None = None
    minimum: int | None = None
    maximum: int | None = None
    unit: str | None = None


class PropertyTypeDecimal(KubeModel):
    """A float or double property."""

    access_mode: AccessMode | None = None
    default_value: float | None = None
    minimum: float | None = None
    maximum: float | None = None
    unit: str | None = None


class PropertyTypeText(KubeModel):
    """A string property."""

    access_mode: AccessMode | None = None
    default_value: str | None = None


class PropertyTypeBoolean(KubeModel):
    """A boolean property."""

    access_mode: AccessMode | None = None
    default_value: bool | None = None


class PropertyTypeBytes(KubeModel):
    """A bytes property."""

    access_mode: AccessMode | None = None


PropertyTypeSettings = (
    PropertyTypeInt64 | PropertyTypeDecimal | PropertyTypeText | PropertyTypeBoolean | PropertyTypeBytes
)


class PropertyTypeChoice(KubeModel):
    """Exactly one of int, string, double, float, boolean, bytes."""

    int_type: PropertyTypeInt64 | None = Field(default=None, alias="int")
    string_type: PropertyTypeText | None = Field(default=None, alias="string")
    double_type: PropertyTypeDecimal | None = Field(default=None, alias="double")
    float_type: PropertyTypeDecimal | None = Field(default=None, alias="float")
    boolean_type: PropertyTypeBoolean | None = Field(default=None, alias="boolean")
    bytes_type: PropertyTypeBytes | None = Field(default=None, alias="bytes")

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        chosen = [name for name in _TYPE_MEMBERS if getattr(self, name) is not None]
        if len(chosen) != 1:
            raise field_error((), "must set exactly one of int, string, double, float, boolean, bytes")
        return self

    def chosen(self) -> tuple[PropertyType, PropertyTypeSettings]:
        """The v1beta1 type and the settings of the one member that is set."""
        name = next(name for name in _TYPE_MEMBERS if getattr(self, name) is not None)
        settings: PropertyTypeSettings = getattr(self, name)
        return _TYPE_MEMBERS[name], settings


_TYPE_MEMBERS = {
    "int_type": PropertyType.INT,
    "string_type": PropertyType.STRING,
    "double_type": PropertyType.DOUBLE,
    "float_type": PropertyType.FLOAT,
    "boolean_type": PropertyType.BOOLEAN,
    "bytes_type": PropertyType.BYTES,
}


class DevicePropertyV1Alpha2(KubeModel):
    """A property of a v1alpha2 DeviceModel."""

    name: str
    description: str | None = None
    type: PropertyTypeChoice


class DeviceModelSpecV1Alpha2(KubeModel):
    """A v1alpha2 DeviceModel's spec."""

    properties: list[DevicePropertyV1Alpha2] = Field(default_factory=list)


class DeviceModelV1Alpha2(KubeObject):
    """A ``devices.kubeedge.io/v1alpha2`` DeviceModel."""

    api_version: Literal["devices.kubeedge.io/v1alpha2"] = API_VERSION
    kind: Literal["DeviceModel"] = "DeviceModel"
    spec: DeviceModelSpecV1Alpha2 = Field(default_factory=DeviceModelSpecV1Alpha2)


# --- Conversion ---------------------------------------------------------------------------------------------


def device_model_from_v1alpha2(old: DeviceModelV1Alpha2) -> DeviceModel:
    """The v1beta1 DeviceModel of a v1alpha2 one."""
    properties = []
    for prop in old.spec.properties:
        property_type, settings = prop.type.chosen()
        numeric = settings if isinstance(settings, PropertyTypeInt64 | PropertyTypeDecimal) else None
        properties.append(
            ModelProperty(
                name=prop.name,
                description=prop.description,
                type=property_type,
                access_mode=settings.access_mode,
                minimum=_text(numeric.minimum) if numeric else None,
                maximum=_text(numeric.maximum) if numeric else None,
                unit=numeric.unit if numeric else None,
            )
        )
    return DeviceModel(metadata=old.metadata, spec=DeviceModelSpec(properties=properties))


def _text(number: float | None) -> str | None:
    if number is None:
        return None
    # v1alpha2 float bounds arrive as floats even when written as integers; "5" reads better than "5.0".
    return str(int(number)) if float(number).is_integer() else repr(number)


def device_from_v1alpha2(old: DeviceV1Alpha2) -> Device:
    """The v1beta1 Device of a v1alpha2 one (see the module documentation for what goes where)."""
    twins = old.status.twins if old.status else []
    desired = {twin.property_name: twin.desired for twin in twins if twin.desired and twin.desired.value}
    data = old.spec.data or DeviceData()
    data_names = {prop.property_name for prop in data.data_properties}
    push = PushMethod(mqtt=PushMethodMQTT(topic=data.data_topic)) if data.data_topic else None

    properties: dict[str, DeviceProperty] = {}
    for visitor in old.spec.property_visitors:
        properties[visitor.property_name] = DeviceProperty(
            name=visitor.property_name,
            visitors=_visitor(visitor),
            report_cycle=visitor.report_cycle,
            collect_cycle=visitor.collect_cycle,
        )
    for name in [twin.property_name for twin in twins] + sorted(data_names):
        properties.setdefault(name, DeviceProperty(name=name))
    for name, prop in properties.items():
        is_data = name in data_names
        properties[name] = prop.model_copy(
            update={
                "desired": _twin_value(desired.get(name)),
                "report_to_cloud": not is_data,
                "push_method": push if is_data else None,
            }
        )

    return Device(
        metadata=old.metadata,
        spec=DeviceSpec(
            device_model_ref=old.spec.device_model_ref,
            node_name=_node_name(old.spec.node_selector),
            properties=list(properties.values()),
            protocol=_protocol(old.spec.protocol),
        ),
        status=_status(old.status),
    )


def _twin_value(value: TwinPropertyV1Alpha2 | None) -> TwinProperty | None:
    return TwinProperty(value=value.value, metadata=value.metadata) if value else None


def _status(old: DeviceStatusV1Alpha2 | None) -> DeviceStatus | None:
    if old is None:
        return None
    twins = [
        Twin(property_name=twin.property_name, reported=_twin_value(twin.reported))
        for twin in old.twins
        if twin.reported and (twin.reported.value or twin.reported.metadata)
    ]
    return DeviceStatus(twins=twins, state=old.state, last_online_time=old.last_online)


def _node_name(selector: NodeSelector | None) -> str | None:
    if selector is None:
        return None
    for term in selector.node_selector_terms:
        for requirement in [*term.match_expressions, *term.match_fields]:
            if requirement.operator == "In" and requirement.values:
                return requirement.values[0]
    return None


def _protocol(old: ProtocolConfigV1Alpha2 | None) -> ProtocolConfig | None:
    if old is None:
        return None
    common = old.common or ProtocolConfigCommon()
    extra = {**_present(common.model_copy(update={"com": None, "tcp": None, "customized_values": {}}))}
    extra.update(common.customized_values)
    if old.modbus is not None:
        return ProtocolConfig(
            protocol_name=MODBUS, config_data={**_present(old.modbus), **_transport(common), **extra}
        )
    if old.opcua is not None:
        return ProtocolConfig(protocol_name=OPCUA, config_data={**_present(old.opcua), **extra})
    if old.bluetooth is not None:
        return ProtocolConfig(protocol_name=BLE, config_data={**_present(old.bluetooth), **extra})
    if old.customized_protocol is not None:
        custom = old.customized_protocol
        return ProtocolConfig(protocol_name=custom.protocol_name, config_data={**custom.config_data, **extra})
    return None


def _transport(common: ProtocolConfigCommon) -> dict[str, Any]:
    if common.com is not None:
        return {"communicateMode": "RTU", **_present(common.com)}
    if common.tcp is not None:
        return {"communicateMode": "TCP", **_present(common.tcp)}
    return {}


def _visitor(old: DevicePropertyVisitor) -> VisitorConfig | None:
    extra = old.customized_values
    if old.modbus is not None:
        return VisitorConfig(protocol_name=MODBUS, config_data={**_present(old.modbus), **extra})
    if old.opcua is not None:
        return VisitorConfig(protocol_name=OPCUA, config_data={**_present(old.opcua), **extra})
    if old.bluetooth is not None:
        config = _present(old.bluetooth)
        if old.bluetooth.data_write:
            config["dataWrite"] = {
                key: _v1alpha2_bytes(value) for key, value in old.bluetooth.data_write.items()
            }
        return VisitorConfig(protocol_name=BLE, config_data={**config, **extra})
    if old.customized_protocol is not None:
        custom = old.customized_protocol
        return VisitorConfig(protocol_name=custom.protocol_name, config_data={**custom.config_data, **extra})
    return VisitorConfig(config_data=extra) if extra else None


def _v1alpha2_bytes(value: object) -> object:
    """v1alpha2 ``dataWrite`` values are Go ``[]byte``, i.e. base64 strings in YAML; v1beta1 takes byte lists.

    Values that are not base64 (a byte list, a hex string) are left for the BLE config to read.
    """
    if not isinstance(value, str):
        return value
    try:
        return list(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        return value

"""``devices.kubeedge.io/v1beta1`` Device: one device instance, its protocol, properties and twin status."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field

from device_models.base import KubeModel
from device_models.device_model import API_VERSION
from device_models.meta import Condition, KubeObject, LocalObjectReference
from device_models.push_method import PushMethod


class TwinProperty(KubeModel):
    """A property value (always a string, as in KubeEdge) and its metadata (timestamp, type, ...)."""

    value: str
    """The value, e.g. "21.5"."""
    metadata: dict[str, str] = Field(default_factory=dict)
    """Additional metadata, like the timestamp when the value was reported."""


# configData keys whose values are credentials: masked in reprs, so logging a Device does not leak them.
_SECRET_KEYS = frozenset({"password"})


class ProtocolConfig(KubeModel):
    """How to reach the device: the protocol name and its free-form configData."""

    protocol_name: str = Field(min_length=1)
    """modbus, opcua, ble, or the name of a customized protocol."""
    config_data: dict[str, Any] = Field(default_factory=dict)
    """Protocol settings (for modbus: communicateMode, ip, port, slaveID, serialPort, ...)."""

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            if name == "config_data" and isinstance(value, dict):
                value = {key: "**********" if key in _SECRET_KEYS else item for key, item in value.items()}
            yield name, value


class VisitorConfig(KubeModel):
    """How to reach one property on the device: protocol name and free-form configData."""

    protocol_name: str | None = None
    """The device's protocol name (defaults to spec.protocol.protocolName)."""
    config_data: dict[str, Any] = Field(default_factory=dict)
    """Protocol settings of the property (for modbus: register, offset, limit, scale, dataType, ...)."""


class DeviceProperty(KubeModel):
    """One property of the device: its desired value and how the mapper reads and writes it."""

    name: str
    """The property name; it must exist in the DeviceModel."""
    desired: TwinProperty | None = None
    """The desired value; `kubectl edit` of desired.value is how users set a device."""
    visitors: VisitorConfig | None = None
    """Protocol settings the mapper uses to read and write this property."""
    report_cycle: int | None = Field(default=None, ge=0)
    """How often the mapper reports the value (milliseconds)."""
    collect_cycle: int | None = Field(default=None, ge=0)
    """How often the mapper reads the value from the device (milliseconds)."""
    report_to_cloud: bool | None = None
    """Whether reported values go to the cloud (the Device's status)."""
    push_method: PushMethod | None = None
    """Where else the mapper pushes the data."""


class DeviceMethod(KubeModel):
    """A named operation of the device that controls some of its properties."""

    name: str
    description: str | None = None
    property_names: list[str] = Field(default_factory=list)
    """The properties this method controls."""


class StateReport(KubeModel):
    """How the mapper reports the device's state (online, offline, ...)."""

    report_cycle: int | None = Field(default=None, ge=0)
    report_to_cloud: bool | None = None


class DeviceSpec(KubeModel):
    """What the device is and how to reach it."""

    device_model_ref: LocalObjectReference
    """The DeviceModel (in the same namespace) this device is an instance of."""
    node_name: str | None = None
    """The edge node the device is attached to."""
    properties: list[DeviceProperty] = Field(default_factory=list)
    """The device's properties; names are unique."""
    protocol: ProtocolConfig | None = None
    """The protocol configuration used to connect to the device."""
    methods: list[DeviceMethod] = Field(default_factory=list)
    """The device's methods; names are unique."""
    state_report: StateReport | None = None
    """How the device state is reported."""


class Twin(KubeModel):
    """The reported value of a property and the desired value the mapper last acted on."""

    property_name: str
    reported: TwinProperty | None = None
    """The value last read from the device."""
    observed_desired: TwinProperty | None = None
    """The desired value the edge has received."""


class DeviceStatus(KubeModel):
    """Device state and twin values, written by edgetwin."""

    twins: list[Twin] = Field(default_factory=list)
    state: str | None = None
    """online, offline, ok, unknown or unhealthy."""
    last_online_time: str | None = None
    report_to_cloud: bool | None = None
    report_cycle: int | None = Field(default=None, ge=0)
    conditions: list[Condition] = Field(default_factory=list)
    """[edgetwin] Conditions of the device, e.g. whether its spec is valid."""


class Device(KubeObject):
    """A ``devices.kubeedge.io/v1beta1`` Device."""

    api_version: Literal["devices.kubeedge.io/v1beta1"] = API_VERSION
    kind: Literal["Device"] = "Device"
    spec: DeviceSpec
    status: DeviceStatus | None = None

    @property
    def model_id(self) -> str:
        """``<namespace>/<name>`` of the device's DeviceModel (models live in the device's namespace)."""
        return f"{self.metadata.namespace}/{self.spec.device_model_ref.name}"

    @property
    def node_name(self) -> str | None:
        """The edge node the device is bound to, if any."""
        return self.spec.node_name

    @property
    def protocol_name(self) -> str | None:
        """``spec.protocol.protocolName``, if the device has a protocol."""
        return self.spec.protocol.protocol_name if self.spec.protocol else None

    @property
    def property_names(self) -> list[str]:
        """The names of the device's properties, in order."""
        return [prop.name for prop in self.spec.properties]

    def get_property(self, name: str) -> DeviceProperty | None:
        """The property called ``name``, or None."""
        return next((prop for prop in self.spec.properties if prop.name == name), None)

    def get_twin(self, property_name: str) -> Twin | None:
        """The status twin of ``property_name``, or None."""
        twins = self.status.twins if self.status else []
        return next((twin for twin in twins if twin.property_name == property_name), None)

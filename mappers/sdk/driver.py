"""What a protocol implements to plug into the SDK, and the device / property view it is given.

A protocol package (``mappers.modbus``, ``mappers.opcua``, ...) provides a :class:`ProtocolPlugin` that turns
a :class:`DeviceConfig` into a :class:`DeviceDriver`. The driver only talks to the device: ``connect``,
``read_many``, ``write_one``, ``close``. Everything else (cycles, twin values, MQTT, desired values, errors,
device state, metrics, reconnecting with backoff) is the SDK's.

A driver whose device can push changes (OPC-UA subscriptions) also implements :class:`SubscribingDriver`:
after each connect the SDK asks it to ``subscribe`` and polls only what it could not subscribe.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from device_models import DeviceProtocolConfig, ModelProperty, PropertyProtocolConfig
from mappers.sdk.errors import DeviceUnreachableError, PropertyError

DeviceValue = int | float | bool | str | bytes
"""A value as a driver reads or writes it; the SDK converts to and from the twin's strings."""

Reading = DeviceValue | PropertyError
"""One property's outcome in :meth:`DeviceDriver.read_many`: its value, or why it could not be read."""

RequestRecorder = Callable[[float], None]
"""Called by a driver once per request sent to the device, with its duration in seconds (for metrics)."""


@dataclass(frozen=True, slots=True)
class PropertyConfig:
    """A device property, merged from the Device (visitor, cycles) and its DeviceModel (type, range)."""

    name: str
    model: ModelProperty
    """The DeviceModel's property: type, access mode, minimum, maximum."""
    visitor: PropertyProtocolConfig
    """The property's typed ``visitors.configData`` (e.g. a ``ModbusVisitorConfig``)."""
    collect_cycle: float = 1.0
    """Seconds between two reads (the Device's ``collectCycle`` is milliseconds, as in KubeEdge)."""
    report_cycle: float | None = None
    """Seconds between two reports of an unchanged value; ``None`` reports changes only."""

    @property
    def twin_type(self) -> str:
        """The twin ``metadata.type`` the property is reported with (int, float, boolean or string)."""
        return self.model.type.twin_type


@dataclass(frozen=True)
class DeviceConfig:
    """A device as a mapper drives it: identity, typed protocol configuration and properties."""

    namespace: str
    name: str
    protocol: DeviceProtocolConfig
    """The typed ``spec.protocol.configData`` (e.g. a ``ModbusProtocolConfig``)."""
    properties: tuple[PropertyConfig, ...] = field(default_factory=tuple)

    @property
    def id(self) -> str:
        """The twin's device id, ``<namespace>/<name>``."""
        return f"{self.namespace}/{self.name}"


class DeviceDriver(Protocol):
    """Talks to one device. Methods are called from one task at a time, never concurrently."""

    async def connect(self) -> None:
        """Open the connection; raise :class:`~mappers.sdk.errors.DeviceUnreachableError` if it fails."""

    async def read_many(self, properties: Sequence[PropertyConfig]) -> Mapping[str, Reading]:
        """Read ``properties`` in as few requests as the protocol allows; one :data:`Reading` per name.

        Raise :class:`~mappers.sdk.errors.DeviceUnreachableError` when the device cannot be reached at all.
        """

    async def write_one(self, prop: PropertyConfig, value: DeviceValue) -> None:
        """Write one value; raise a :class:`~mappers.sdk.errors.PropertyError` leaf if it cannot."""

    async def close(self) -> None:
        """Close the connection; idempotent, never raises."""


class PushReceiver(Protocol):
    """Where a :class:`SubscribingDriver` delivers what its device pushes; the SDK provides it."""

    def changed(self, readings: Mapping[str, Reading]) -> None:
        """New readings of subscribed properties: all of them first, then those that changed."""

    def lost(self, error: DeviceUnreachableError) -> None:
        """The subscription (or the connection under it) is gone: the SDK reconnects and subscribes again."""


@runtime_checkable
class SubscribingDriver(DeviceDriver, Protocol):
    """A driver that can have its device push changes instead of being polled (an optional capability)."""

    async def subscribe(
        self, properties: Sequence[PropertyConfig], receiver: PushReceiver
    ) -> Sequence[PropertyConfig]:
        """Subscribe to ``properties`` (after each :meth:`connect`); return those that must still be polled.

        A device that cannot push returns ``properties`` as they are. Raise
        :class:`~mappers.sdk.errors.DeviceUnreachableError` when the device went away. Readings delivered to
        ``receiver`` must be read or notified on this connection, never values kept from an earlier one.
        """


class ProtocolPlugin(Protocol):
    """A protocol: its ``protocolName`` and how to build a driver for one device."""

    @property
    def name(self) -> str:
        """The ``spec.protocol.protocolName`` this plugin drives (compared case-insensitively)."""

    def create_driver(self, device: DeviceConfig, record_request: RequestRecorder) -> DeviceDriver:
        """Check the device's configuration and build its driver; no I/O.

        Raise :class:`~mappers.sdk.errors.MapperConfigError` naming the field to fix.
        """

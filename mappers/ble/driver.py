"""The BLE protocol plugin of the mapper SDK: one bleak connection per device.

A device is found by a scan on the mapper's adapter (remembered afterwards, see :mod:`mappers.ble.finder`),
then connected; at most ``max_connecting`` devices are being found or connected at once, since a BlueZ
adapter handles few connection attempts together. After each connection the properties' characteristics are
looked up by UUID, and the SDK asks the driver to subscribe: a characteristic that notifies (or indicates)
is subscribed with ``start_notify`` and read once, and each notification is reported at once, as KubeEdge's
BLE mapper does; a readable one is polled on its ``collectCycle``; a write-only one is only written.
Desired values are written with a write request (or a write command where the characteristic takes only
that), as :mod:`mappers.ble.converter` encodes them.

A lost connection (bleak's disconnected callback) ends the session: the SDK marks the device ``offline`` and
reconnects with its backoff; the notifications of an old connection never reach the SDK after that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.exc import BleakDBusError, BleakDeviceNotFoundError, BleakError

from device_models import BleProtocolConfig, BleVisitorConfig
from mappers.ble.converter import decode, encode
from mappers.ble.errors import AdapterError, CharacteristicNotFoundError, ValueDecodeError
from mappers.ble.finder import DeviceFinder
from mappers.sdk import (
    DeviceConfig,
    DeviceResponseError,
    DeviceUnreachableError,
    DeviceValue,
    MapperConfigError,
    PropertyConfig,
    PropertyError,
    PushReceiver,
    Reading,
    RequestRecorder,
    ValueEncodeError,
    ValueRefusedError,
)

log = logging.getLogger(__name__)

PROTOCOL_NAME = "ble"
BLE_ERRORS = (BleakError, OSError, EOFError)
"""What bleak (and dbus-fast under it) raise when a request fails; TimeoutError is an OSError."""
_GONE = frozenset({"org.freedesktop.DBus.Error.UnknownObject", "org.bluez.Error.DoesNotExist"})


@dataclass(frozen=True)
class BleSettings:
    """How the mapper uses Bluetooth, for every device."""

    adapter: str = "hci0"
    """The BlueZ adapter (bleak 3's ``bluez={"adapter": ...}``)."""
    scan_timeout: float = 10.0
    """Seconds a scan looks for a device not found yet."""
    connect_timeout: float = 10.0
    """Seconds a connection (with the discovery of its services) may take."""
    timeout: float = 5.0
    """Seconds to wait for each read or write."""
    max_connecting: int = 2
    """Devices being found or connected at the same time, on all the mapper's devices."""


class BleDriver:
    """Drives one BLE device (one connection)."""

    def __init__(
        self,
        device: DeviceConfig,
        config: BleProtocolConfig,
        protocol: BleProtocol,
        record_request: RequestRecorder,
    ) -> None:
        self.device = device.id
        self.address = config.mac_address
        """The peripheral's address (learnt by the first scan when the Device gives only a name)."""
        self._configured_address = config.mac_address
        self._name = config.device_name
        self._protocol = protocol
        self._settings = protocol.settings
        self._record = record_request
        self._visitors = {prop.name: _visitor(prop) for prop in device.properties}
        self._client: BleakClient | None = None
        self._characteristics: dict[str, BleakGATTCharacteristic] = {}
        self._receiver: PushReceiver | None = None

    async def connect(self) -> None:
        """Find the device (a scan, the first time) and connect to it."""
        async with self._protocol.connecting:
            self._protocol.attempts[self.device] += 1
            try:
                found = await self._protocol.finder.find(
                    self._configured_address, self._settings.scan_timeout, name=self._name
                )
            except AdapterError as exc:
                raise DeviceUnreachableError(self.device, str(exc)) from exc
            if found is None:
                raise DeviceUnreachableError(
                    self.device,
                    f"{self._configured_address or repr(self._name)} not found by a "
                    f"{self._settings.scan_timeout:g}s scan on {self._settings.adapter} "
                    "(out of range, off, or not advertising)",
                )
            client = BleakClient(
                found,
                disconnected_callback=self._disconnected,
                timeout=self._settings.connect_timeout,
                bluez={"adapter": self._settings.adapter},
            )
            try:
                await client.connect()
            except BLE_ERRORS as exc:
                if _gone(exc):
                    self._protocol.finder.forget(found.address)
                raise self._unreachable("cannot connect", exc) from exc
        self._client = client
        self.address = found.address.upper()
        self._characteristics = {}
        for service in client.services:
            for characteristic in service.characteristics:
                self._characteristics.setdefault(characteristic.uuid, characteristic)

    async def close(self) -> None:
        """Disconnect (if still connected); idempotent, never raises."""
        self._receiver = None
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(*BLE_ERRORS):
            async with asyncio.timeout(self._settings.timeout):
                await client.disconnect()

    async def subscribe(
        self, properties: Sequence[PropertyConfig], receiver: PushReceiver
    ) -> Sequence[PropertyConfig]:
        """Subscribe to notifying characteristics; returns the properties to poll (readable, no notify)."""
        client = self._connected()
        self._receiver = receiver
        polled: list[PropertyConfig] = []
        notifying: dict[str, list[PropertyConfig]] = {}
        for prop in properties:
            characteristic = self._characteristics.get(self._visitors[prop.name].characteristic_uuid)
            flags = set(characteristic.properties) if characteristic is not None else {"read"}
            if flags & {"notify", "indicate"}:
                notifying.setdefault(self._visitors[prop.name].characteristic_uuid, []).append(prop)
            elif "read" in flags:  # a missing characteristic is polled: each read reports it
                polled.append(prop)
        first: dict[str, Reading] = {}
        for uuid, props in notifying.items():
            characteristic = self._characteristics[uuid]
            try:
                await client.start_notify(characteristic, partial(self._notified, receiver, props))
            except BLE_ERRORS as exc:
                if not client.is_connected:
                    raise self._unreachable("connection lost", exc) from exc
                log.warning("cannot subscribe to %s (%s): polling", uuid, exc, extra={"device": self.device})
                polled.extend(props)
                continue
            if "read" in characteristic.properties:
                first.update(await self._read(props, characteristic))
        if first:
            receiver.changed(first)
        return polled

    def _notified(
        self, receiver: PushReceiver, props: list[PropertyConfig], _sender: object, data: bytearray
    ) -> None:
        if receiver is self._receiver:  # an old connection's late notification is dropped
            receiver.changed({prop.name: self._reading(prop, bytes(data)) for prop in props})

    def _disconnected(self, client: BleakClient) -> None:
        receiver = self._receiver
        if receiver is not None and client is self._client:
            receiver.lost(DeviceUnreachableError(self.device, f"the connection to {self.address} was lost"))

    async def read_many(self, properties: Sequence[PropertyConfig]) -> Mapping[str, Reading]:
        """Read ``properties``: one read per characteristic."""
        self._connected()
        by_uuid: dict[str, list[PropertyConfig]] = {}
        for prop in properties:
            by_uuid.setdefault(self._visitors[prop.name].characteristic_uuid, []).append(prop)
        readings: dict[str, Reading] = {}
        for uuid, props in by_uuid.items():
            characteristic = self._characteristics.get(uuid)
            if characteristic is None:
                readings.update(
                    (prop.name, CharacteristicNotFoundError(self.device, prop.name, uuid)) for prop in props
                )
                continue
            readings.update(await self._read(props, characteristic))
        return readings

    async def _read(
        self, props: list[PropertyConfig], characteristic: BleakGATTCharacteristic
    ) -> dict[str, Reading]:
        client = self._connected()
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._settings.timeout):
                data = bytes(await client.read_gatt_char(characteristic))
        except BLE_ERRORS as exc:
            if not client.is_connected or isinstance(exc, TimeoutError):
                raise self._unreachable("read failed", exc) from exc
            reason = f"reading {characteristic.uuid} failed: {exc}"
            return {prop.name: DeviceResponseError(self.device, prop.name, reason) for prop in props}
        finally:
            self._record(time.monotonic() - started)
        return {prop.name: self._reading(prop, data) for prop in props}

    def _reading(self, prop: PropertyConfig, data: bytes) -> Reading:
        visitor = self._visitors[prop.name]
        try:
            return decode(prop.model, visitor, data)
        except ValueDecodeError as exc:
            return PropertyError(
                self.device, prop.name, f"characteristic {visitor.characteristic_uuid}: {exc}"
            )

    async def write_one(self, prop: PropertyConfig, value: DeviceValue) -> None:
        """Write ``value`` to the property's characteristic."""
        client = self._connected()
        visitor = self._visitors[prop.name]
        characteristic = self._characteristics.get(visitor.characteristic_uuid)
        if characteristic is None:
            raise CharacteristicNotFoundError(self.device, prop.name, visitor.characteristic_uuid)
        flags = set(characteristic.properties)
        if not flags & {"write", "write-without-response"}:
            raise ValueRefusedError(
                self.device, prop.name, value, f"characteristic {characteristic.uuid} is not writable"
            )
        try:
            data = encode(value, prop.model, visitor)
        except ValueEncodeError as exc:
            raise ValueRefusedError(self.device, prop.name, value, exc.reason) from exc
        started = time.monotonic()
        try:
            async with asyncio.timeout(self._settings.timeout):
                await client.write_gatt_char(characteristic, data, response="write" in flags)
        except BLE_ERRORS as exc:
            if not client.is_connected or isinstance(exc, TimeoutError):
                raise self._unreachable("write failed", exc) from exc
            raise DeviceResponseError(
                self.device, prop.name, f"writing {data.hex()} to {characteristic.uuid} failed: {exc}"
            ) from exc
        finally:
            self._record(time.monotonic() - started)

    def _connected(self) -> BleakClient:
        client = self._client
        if client is None or not client.is_connected:
            raise DeviceUnreachableError(self.device, f"not connected to {self.address}")
        return client

    def _unreachable(self, what: str, error: BaseException) -> DeviceUnreachableError:
        reason = str(error) or type(error).__name__
        return DeviceUnreachableError(self.device, f"{what}: {self.address}: {reason}")


def _gone(error: BaseException) -> bool:
    """BlueZ no longer knows the device: scan for it again."""
    if isinstance(error, BleakDeviceNotFoundError):
        return True
    return isinstance(error, BleakDBusError) and error.dbus_error in _GONE


def _visitor(prop: PropertyConfig) -> BleVisitorConfig:
    visitor = prop.visitor
    if not isinstance(visitor, BleVisitorConfig):  # checked when the driver was made
        raise TypeError(f"property {prop.name} has no BLE visitor")
    return visitor


class BleProtocol:
    """The ``ble`` protocol: builds drivers; owns the adapter's scans and the limit on connection attempts."""

    def __init__(self, settings: BleSettings | None = None) -> None:
        self.settings = settings or BleSettings()
        self.finder = DeviceFinder(self.settings.adapter)
        self.connecting = asyncio.Semaphore(self.settings.max_connecting)
        """Held while a device is being found and connected."""
        self.attempts: Counter[str] = Counter()
        """Connection attempts per device (for diagnostics and tests)."""

    @property
    def name(self) -> str:
        """``protocolName`` of the devices this plugin drives."""
        return PROTOCOL_NAME

    def create_driver(self, device: DeviceConfig, record_request: RequestRecorder) -> BleDriver:
        """A driver for ``device``; raises :class:`MapperConfigError` naming the field to fix."""
        config = device.protocol
        if not isinstance(config, BleProtocolConfig):
            raise MapperConfigError(
                device.id, "spec.protocol.protocolName", type(config).__name__, "is not ble"
            )
        for prop in device.properties:
            if not isinstance(prop.visitor, BleVisitorConfig):
                where = f"spec.properties[name={prop.name}].visitors.configData"
                raise MapperConfigError(device.id, where, prop.visitor, "is not a BLE visitor")
        return BleDriver(device, config, self, record_request)

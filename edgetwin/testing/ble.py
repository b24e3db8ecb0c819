"""An emulated Bluetooth Low Energy world: BlueZ's D-Bus API (bluezoo) on a private bus, and a thermometer.

No Bluetooth hardware is needed. :class:`BleStack` starts a private ``dbus-daemon`` (a session-style bus on a
unix socket in a temporary directory) and ``bluezoo`` on it, serving BlueZ's ``org.bluez`` API with a central
adapter ``hci0``. bleak finds that bus through ``DBUS_SYSTEM_BUS_ADDRESS`` (:attr:`BleStack.env`) and runs
unchanged against it.

:class:`Thermometer` is a GATT peripheral written with dbus-fast, the way a BlueZ peripheral application is:
it adds an adapter of its own to bluezoo (its MAC address is the peripheral's), registers an LE
advertisement (discoverable, with its local name and service) and a GATT application with a thermometer
service: the standard Temperature characteristic 0x2A6E (read, notify; a signed 16-bit little-endian value in
hundredths of a degree) and a writable LED characteristic (read, write; one byte, ``01`` on). A test changes
the temperature (notified at once to a subscribed central), reads what was written to the LED, makes the
peripheral disappear (its radio off: the link drops, connections fail, scans miss it) and return.

bluezoo differs from BlueZ in three ways that matter to a central, and :func:`run_bluezoo` (the bluezoo
process's entry point) mends them: bluezoo keeps a device's GATT objects after a disconnection, so a second
connection to the same device fails (BlueZ removes them, and adds them again on the next connection); it
connects to a device whose adapter is powered off (BlueZ fails, e.g. "Host is down"); and a device it
already knows is reported to a new scan only the first time (BlueZ updates its RSSI on every advertisement
heard, which scanners report), so a second process scanning for the device would never see it. A central
should still remember what its scans found: a device that advertises rarely is missed by a short scan.
"""

# No ``from __future__ import annotations``: dbus-fast reads the D-Bus signatures from the annotations, and a
# postponed ``-> None`` would read as the string "None".
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Annotated, Any, Self

from dbus_fast import BusType, DBusError
from dbus_fast.aio import MessageBus, ProxyInterface
from dbus_fast.annotations import DBusBool, DBusBytes, DBusDict, DBusObjectPath, DBusSignature, DBusStr
from dbus_fast.constants import PropertyAccess
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property

from edgetwin.testing.waiting import wait_for, wait_for_sync

__all__ = [
    "CENTRAL_ADAPTER",
    "CENTRAL_ADDRESS",
    "ENVIRONMENT_SERVICE",
    "LED_UUID",
    "TEMPERATURE_UUID",
    "BleStack",
    "Thermometer",
    "missing",
    "run_bluezoo",
]

CENTRAL_ADAPTER = "hci0"
"""The adapter a mapper uses (bluezoo's first)."""
CENTRAL_ADDRESS = "00:00:00:00:E0:00"
ENVIRONMENT_SERVICE = "0000181a-0000-1000-8000-00805f9b34fb"
"""Environmental Sensing: the thermometer's service."""
TEMPERATURE_UUID = "00002a6e-0000-1000-8000-00805f9b34fb"
LED_UUID = "6e400002-b5a3-f393-e0a9-e50e24dcca9e"

_BLUEZ = "org.bluez"
_BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"""
_STRINGS = Annotated[list[str], DBusSignature("as")]


def missing() -> str | None:
    """Why the emulated stack cannot run here (``dbus-daemon`` or bluezoo absent), or ``None``."""
    if shutil.which("dbus-daemon") is None:
        return "dbus-daemon is not installed (Debian package dbus)"
    try:
        import bluezoo  # noqa: F401 - only to learn whether it is installed
    except ImportError:
        return "bluezoo is not installed (pip install bluezoo)"
    return None


def run_bluezoo() -> None:
    """bluezoo's ``main``, with the fixes of the module docstring (the bluezoo process runs this)."""
    from bluezoo import bluezoo, device, exceptions

    connect, disconnect = device.Device.connect, device.Device.disconnect
    properties_sync = device.Device.properties_sync

    async def connect_if_powered(self: Any, uuid: str | None = None) -> None:
        if not self.peer_adapter.powered:
            raise exceptions.DBusBluezFailedError("Host is down")
        await connect(self, uuid)

    async def disconnect_and_forget_services(self: Any, uuid: str | None = None) -> None:
        await disconnect(self, uuid)
        # Children first: characteristics and descriptors sort after their service.
        for path in sorted(self.services, reverse=True):
            link = self.services.pop(path)
            subscription = getattr(link, "client_props_changed_subscription", None)
            if subscription is not None:
                subscription.unsubscribe()
            self.peer_adapter.mock.remove_object(link)
        await self.ServicesResolved.set_async(False)

    async def sync_and_report_rssi(self: Any, other: Any) -> None:
        await properties_sync(self, other)
        self.properties_changed.emit(("org.bluez.Device1", {"RSSI": ("n", self.rssi)}, []))

    device.Device.connect = connect_if_powered
    device.Device.properties_sync = sync_and_report_rssi
    device.Device.disconnect = disconnect_and_forget_services
    bluezoo.main()


class BleStack:
    """A private D-Bus bus with bluezoo serving BlueZ on it (adapter ``hci0``); synchronous start and stop.

    Use as a context manager, or :meth:`start` / :meth:`stop`. :attr:`env` holds the variables a process
    needs to use it (``DBUS_SYSTEM_BUS_ADDRESS``).
    """

    def __init__(self, workdir: Path | None = None, *, scan_interval: int = 1) -> None:
        self._own_dir: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            # A short path: unix socket paths are limited to about 100 bytes.
            self._own_dir = tempfile.TemporaryDirectory(prefix="edgetwin-ble-")
            workdir = Path(self._own_dir.name)
        self.workdir = workdir
        self.scan_interval = scan_interval
        self.address = f"unix:path={workdir / 'bus'}"
        """The bus address (``DBUS_SYSTEM_BUS_ADDRESS`` for bleak)."""
        self._daemon: subprocess.Popen[bytes] | None = None
        self._bluezoo: subprocess.Popen[bytes] | None = None
        self._next_adapter = 1

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point bleak (and any D-Bus client of the system bus) at this stack."""
        return {"DBUS_SYSTEM_BUS_ADDRESS": self.address}

    def adapter_id(self) -> int:
        """A bluezoo adapter number no peripheral of this stack uses yet."""
        number, self._next_adapter = self._next_adapter, self._next_adapter + 1
        if number > 255:
            raise RuntimeError("bluezoo holds at most 255 peripheral adapters")
        return number

    def start(self) -> None:
        """Start dbus-daemon, then bluezoo; returns once ``hci0`` is on the bus."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        socket = self.workdir / "bus"
        config = self.workdir / "bus.conf"
        config.write_text(_BUS_CONFIG.format(socket=socket))
        try:
            with (self.workdir / "dbus-daemon.log").open("wb") as log:
                self._daemon = subprocess.Popen(
                    ["dbus-daemon", f"--config-file={config}", "--nofork", "--nopidfile"],
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            wait_for_sync(socket.exists, timeout=10, what="the dbus-daemon socket")
            with (self.workdir / "bluezoo.log").open("wb") as log:
                self._bluezoo = self._start_bluezoo(log)
            wait_for_sync(self._central_ready, timeout=15, what="bluezoo serving hci0")
        except BaseException:
            self.stop()
            raise

    def _start_bluezoo(self, log: IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from edgetwin.testing.ble import run_bluezoo; run_bluezoo()",
                "--auto-enable",
                f"--scan-interval={self.scan_interval}",
                f"--adapter={CENTRAL_ADDRESS}",
                "-q",
            ],
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )

    def _central_ready(self) -> bool:
        if self._bluezoo is not None and self._bluezoo.poll() is not None:
            log = (self.workdir / "bluezoo.log").read_text(errors="replace")
            raise RuntimeError(f"bluezoo exited with {self._bluezoo.returncode}: {log[-2000:]}")
        return asyncio.run(_has_object(self.address, f"/org/bluez/{CENTRAL_ADAPTER}"))

    def stop(self) -> None:
        """Stop bluezoo and the bus (idempotent)."""
        for process in (self._bluezoo, self._daemon):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        self._bluezoo = self._daemon = None
        if self._own_dir is not None:
            self._own_dir.cleanup()
            self._own_dir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


async def _has_object(address: str, path: str) -> bool:
    bus = await MessageBus(bus_address=address).connect()
    try:
        await bus.introspect(_BLUEZ, path)
    except DBusError:
        return False
    finally:
        bus.disconnect()
    return True


class _Advertisement(ServiceInterface):
    def __init__(self, name: str) -> None:
        super().__init__("org.bluez.LEAdvertisement1")
        self._name = name

    @dbus_method()
    def Release(self) -> None:
        """BlueZ drops the advertisement."""

    @dbus_property(access=PropertyAccess.READ)
    def Type(self) -> DBusStr:
        return "peripheral"

    @dbus_property(access=PropertyAccess.READ)
    def LocalName(self) -> DBusStr:
        return self._name

    @dbus_property(access=PropertyAccess.READ)
    def ServiceUUIDs(self) -> _STRINGS:
        return [ENVIRONMENT_SERVICE]

    @dbus_property(access=PropertyAccess.READ)
    def Discoverable(self) -> DBusBool:
        return True


class _Service(ServiceInterface):
    def __init__(self, uuid: str) -> None:
        super().__init__("org.bluez.GattService1")
        self._uuid = uuid

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:
        return self._uuid

    @dbus_property(access=PropertyAccess.READ)
    def Primary(self) -> DBusBool:
        return True


class _Characteristic(ServiceInterface):
    """A GATT characteristic served to BlueZ: its value, and what centrals read, write and subscribe."""

    def __init__(self, uuid: str, service: str, flags: list[str], value: bytes) -> None:
        super().__init__("org.bluez.GattCharacteristic1")
        self.uuid = uuid
        self.service = service
        self.flags = flags
        self.value = value
        self.reads = 0
        self.writes: list[bytes] = []
        self.written = asyncio.Event()

    def update(self, value: bytes) -> None:
        """Set the value; BlueZ notifies it to the centrals that subscribed."""
        self.value = value
        self.emit_properties_changed({"Value": value})

    @dbus_method()
    def ReadValue(self, options: DBusDict) -> DBusBytes:
        self.reads += 1
        return self.value

    @dbus_method()
    def WriteValue(self, value: DBusBytes, options: DBusDict) -> None:
        self.value = bytes(value)
        self.writes.append(self.value)
        self.written.set()

    @dbus_method()
    def StartNotify(self) -> None:
        """Notifications go out through the Value property, whether or not someone listens."""

    @dbus_method()
    def StopNotify(self) -> None:
        """Nothing to stop: see StartNotify."""

    @dbus_method()
    def Confirm(self) -> None:
        """An indication was received."""

    @dbus_property(access=PropertyAccess.READ)
    def UUID(self) -> DBusStr:
        return self.uuid

    @dbus_property(access=PropertyAccess.READ)
    def Service(self) -> DBusObjectPath:
        return self.service

    @dbus_property(access=PropertyAccess.READ)
    def Flags(self) -> _STRINGS:
        return self.flags

    @dbus_property(access=PropertyAccess.READ)
    def Value(self) -> DBusBytes:
        return self.value


@dataclass
class Thermometer:
    """A BLE thermometer on a :class:`BleStack`: temperature (read, notify) and an LED (read, write).

    ``async with Thermometer(stack) as thermometer:`` puts it on the air; :attr:`address` is its MAC.
    """

    stack: BleStack
    name: str = "edgetwin-thermometer"
    """The advertised local name."""
    celsius: float = 21.5
    address: str = ""
    """Its MAC address (from the adapter number when not given)."""
    _adapter: int = field(default=0, init=False)
    _bus: MessageBus | None = field(default=None, init=False)
    _temperature: _Characteristic | None = field(default=None, init=False)
    _led: _Characteristic | None = field(default=None, init=False)
    _root: str = field(default="/edgetwin/thermometer", init=False)

    @property
    def adapter_path(self) -> str:
        """The peripheral's own bluezoo adapter."""
        return f"/org/bluez/hci{self._adapter}"

    @property
    def led(self) -> bytes:
        """The LED characteristic's value (``01`` on, ``00`` off, or whatever a central wrote)."""
        return self._characteristic("led").value

    @property
    def led_writes(self) -> list[bytes]:
        """Every value centrals wrote to the LED, in order."""
        return self._characteristic("led").writes

    @property
    def temperature_reads(self) -> int:
        """How many times centrals read the temperature."""
        return self._characteristic("temperature").reads

    def _characteristic(self, which: str) -> _Characteristic:
        characteristic = self._temperature if which == "temperature" else self._led
        if characteristic is None:
            raise RuntimeError("the thermometer is not started")
        return characteristic

    async def start(self) -> None:
        """Add its adapter to bluezoo, serve the GATT application and advertise."""
        self._adapter = self.stack.adapter_id()
        self.address = self.address or f"00:00:00:00:E1:{self._adapter:02X}"
        self._bus = await MessageBus(bus_type=BusType.SYSTEM, bus_address=self.stack.address).connect()
        manager = await self._interface("/org/bluezoo", "org.bluezoo.Manager1")
        await manager.call_add_adapter(self._adapter, self.address)  # type: ignore[attr-defined]
        service = f"{self._root}/service0"
        self._temperature = _Characteristic(
            TEMPERATURE_UUID, service, ["read", "notify"], _hundredths(self.celsius)
        )
        self._led = _Characteristic(LED_UUID, service, ["read", "write"], b"\x00")
        self._bus.export(f"{self._root}/advertisement", _Advertisement(self.name))
        self._bus.export(service, _Service(ENVIRONMENT_SERVICE))
        self._bus.export(f"{service}/char0", self._temperature)
        self._bus.export(f"{service}/char1", self._led)
        await self._wait_powered(True)
        gatt = await self._interface(self.adapter_path, "org.bluez.GattManager1")
        await gatt.call_register_application(self._root, {})  # type: ignore[attr-defined]
        advertising = await self._interface(self.adapter_path, "org.bluez.LEAdvertisingManager1")
        await advertising.call_register_advertisement(  # type: ignore[attr-defined]
            f"{self._root}/advertisement", {}
        )

    async def stop(self) -> None:
        """Take it off the air for good (its adapter leaves bluezoo); idempotent."""
        bus, self._bus = self._bus, None
        if bus is None:
            return
        try:
            await self._drop_link(bus)
            manager = await _interface(bus, "/org/bluezoo", "org.bluezoo.Manager1")
            with contextlib.suppress(DBusError):
                await manager.call_remove_adapter(self._adapter)  # type: ignore[attr-defined]
        finally:
            bus.disconnect()

    async def set_temperature(self, celsius: float) -> None:
        """A new temperature: readable at once, notified to subscribed centrals."""
        self.celsius = celsius
        self._characteristic("temperature").update(_hundredths(celsius))

    async def set_led(self, value: bytes) -> None:
        """Change the LED on the device itself (a button): readable, not notified."""
        self._characteristic("led").value = value

    async def wait_led_write(self, value: bytes, timeout: float = 10.0) -> None:
        """Wait until a central wrote ``value`` to the LED."""
        await wait_for(lambda: value in self.led_writes, timeout=timeout, what=f"LED written {value.hex()}")

    async def disappear(self) -> None:
        """Out of range: the radio goes off, the central's link drops, connections and scans miss it."""
        await self._set_powered(False)
        if self._bus is not None:
            await self._drop_link(self._bus)

    async def reappear(self) -> None:
        """Back in range: advertising and connectable again, with the same services and values."""
        await self._set_powered(True)

    async def _drop_link(self, bus: MessageBus) -> None:
        """The central's adapter sees the link drop (bluezoo does not tell it when the peer goes away)."""
        path = f"/org/bluez/{CENTRAL_ADAPTER}/dev_{self.address.replace(':', '_')}"
        with contextlib.suppress(DBusError):  # never discovered, or already gone
            device = await _interface(bus, path, "org.bluez.Device1")
            await device.call_disconnect()  # type: ignore[attr-defined]

    async def _set_powered(self, powered: bool) -> None:
        adapter = await self._interface(self.adapter_path, "org.bluez.Adapter1")
        await adapter.set_powered(powered)  # type: ignore[attr-defined]
        await self._wait_powered(powered)

    async def _wait_powered(self, powered: bool) -> None:
        adapter = await self._interface(self.adapter_path, "org.bluez.Adapter1")

        async def reached() -> bool:
            return bool(await adapter.get_powered() == powered)  # type: ignore[attr-defined]

        await wait_for(reached, timeout=5, what=f"adapter hci{self._adapter} powered {powered}")

    async def _interface(self, path: str, interface: str) -> ProxyInterface:
        if self._bus is None:
            raise RuntimeError("the thermometer is not started")
        return await _interface(self._bus, path, interface)

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


def _hundredths(celsius: float) -> bytes:
    """0x2A6E's encoding: signed 16-bit little-endian hundredths of a degree."""
    return round(celsius * 100).to_bytes(2, "little", signed=True)


async def _interface(bus: MessageBus, path: str, interface: str) -> ProxyInterface:
    introspection = await bus.introspect(_BLUEZ, path)
    return bus.get_proxy_object(_BLUEZ, path, introspection).get_interface(interface)

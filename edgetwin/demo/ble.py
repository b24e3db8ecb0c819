"""The demo's BLE thermometer: the emulated BlueZ (bluezoo on a private D-Bus) with the example device on it.

``async with DemoThermometer(device) as thermometer:`` starts a private dbus-daemon and bluezoo, points
this process's bleak at them (``DBUS_SYSTEM_BUS_ADDRESS``, restored afterwards) and puts a thermometer on
the air at the MAC address ``examples/ble-thermometer.yaml`` names, so the mapper drives the example as it is.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from types import TracebackType

from device_models import BleProtocolConfig, Device, DeviceModel, device_protocol_config, load_documents
from edgetwin.testing.ble import BleStack, Thermometer, missing

__all__ = ["DemoThermometer", "example_device", "unavailable"]


def unavailable() -> str | None:
    """Why the BLE part of the demo cannot run here (no dbus-daemon or bluezoo), or ``None``."""
    return missing()


def example_device(path: Path) -> tuple[Device, DeviceModel]:
    """The Device and DeviceModel of the example file ``path`` (one of each)."""
    objects = load_documents(path)
    devices = [obj for obj in objects if isinstance(obj, Device)]
    models = [obj for obj in objects if isinstance(obj, DeviceModel)]
    if len(devices) != 1 or len(models) != 1:
        raise ValueError(f"{path}: expected one Device and one DeviceModel")
    return devices[0], models[0]


class DemoThermometer:
    """The emulated stack and a thermometer at the MAC address of ``device``; an async context manager."""

    def __init__(self, device: Device) -> None:
        config = device_protocol_config(device)
        if not isinstance(config, BleProtocolConfig):
            raise TypeError(f"{device.label} is not a BLE device")
        self._address = config.mac_address
        self._stack = BleStack()
        self._saved: dict[str, str | None] = {}
        self.thermometer: Thermometer | None = None

    async def __aenter__(self) -> Thermometer:
        await asyncio.to_thread(self._stack.start)  # waits for processes: not on the loop
        for name, value in self._stack.env.items():
            self._saved[name] = os.environ.get(name)
            os.environ[name] = value
        try:
            self.thermometer = await Thermometer(self._stack, address=self._address).__aenter__()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self.thermometer

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.thermometer is not None:
            await self.thermometer.stop()
            self.thermometer = None
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        await asyncio.to_thread(self._stack.stop)

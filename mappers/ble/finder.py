"""Finding BLE devices: scans on one adapter, and what they found, remembered for the mapper's lifetime.

BlueZ reports a device it already knows to a new scan only when its advertisement changes (a real adapter
hears advertisements again and again; an emulated one may not), so what a scan found is kept: the next
connection to that device uses the remembered object instead of waiting for a scan that may never see it.
One scan runs at a time per adapter; a device found by another caller's scan is taken from it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from mappers.ble.errors import AdapterError

Detection = Callable[[BLEDevice, AdvertisementData], None]
SCAN_ERRORS = (BleakError, OSError, EOFError)
"""What bleak (and dbus-fast under it) raise when the adapter or BlueZ cannot scan."""


@dataclass(frozen=True)
class Advertised:
    """A device a scan heard: address, advertised name, signal strength, advertised service UUIDs."""

    address: str
    name: str | None
    rssi: int
    services: tuple[str, ...]


class DeviceFinder:
    """Scans ``adapter`` for devices and remembers them by address (and by name, for devices found by one)."""

    def __init__(self, adapter: str) -> None:
        self.adapter = adapter
        self.scans = 0
        """Scans started (for diagnostics and tests)."""
        self._known: dict[str, BLEDevice] = {}
        self._named: dict[str, str] = {}
        """Advertised name → the address it was found at."""
        self._lock = asyncio.Lock()

    def known(self, address: str) -> BLEDevice | None:
        """The device a scan found at ``address`` (upper case with colons), if any."""
        return self._known.get(address.upper())

    def forget(self, address: str) -> None:
        """Drop a device BlueZ no longer knows; the next :meth:`find` scans for it."""
        self._known.pop(address.upper(), None)
        self._named = {name: known for name, known in self._named.items() if known != address.upper()}

    async def find(self, address: str, timeout: float, *, name: str = "") -> BLEDevice | None:
        """The device at ``address`` (or, without one, the first advertising ``name``): remembered, or
        found by a scan of at most ``timeout`` seconds."""
        address = address.upper() or self._named.get(name, "")
        if (device := self._known.get(address)) is not None:
            return device
        async with self._lock:
            address = address or self._named.get(name, "")
            if (device := self._known.get(address)) is not None:  # found by the scan we waited for
                return device
            found: list[BLEDevice] = []
            done = asyncio.Event()

            def seen(device: BLEDevice, advertisement: AdvertisementData) -> None:
                heard = (advertisement.local_name or device.name) if not address else None
                if device.address.upper() == address or (heard is not None and heard == name):
                    found.append(device)
                    done.set()

            try:
                await self._scan(timeout, seen, until=done)
            except TimeoutError:
                return None
        if not address:
            self._named[name] = found[0].address.upper()
            return found[0]
        return self._known.get(address)

    async def scan(self, timeout: float) -> list[Advertised]:
        """Every device heard within ``timeout`` seconds, by address."""
        heard: dict[str, Advertised] = {}

        def seen(device: BLEDevice, advertisement: AdvertisementData) -> None:
            heard[device.address.upper()] = Advertised(
                device.address.upper(),
                advertisement.local_name or device.name,
                advertisement.rssi,
                tuple(advertisement.service_uuids),
            )

        async with self._lock:
            done = asyncio.Event()  # never set: the scan lasts the whole timeout
            with contextlib.suppress(TimeoutError):
                await self._scan(timeout, seen, until=done)
        return sorted(heard.values(), key=lambda row: row.address)

    async def _scan(self, timeout: float, seen: Detection, *, until: asyncio.Event) -> None:
        """Scan until ``until`` is set or ``timeout`` runs out (TimeoutError); remembers every device."""

        def heard(device: BLEDevice, advertisement: AdvertisementData) -> None:
            self._known[device.address.upper()] = device
            seen(device, advertisement)

        self.scans += 1
        # The callback is given to the constructor, not registered after start: BlueZ may report a device
        # as discovery starts, before a later registration would see it.
        scanner = BleakScanner(detection_callback=heard, bluez={"adapter": self.adapter})
        try:
            async with scanner, asyncio.timeout(timeout):
                await until.wait()
        except TimeoutError:
            raise  # an OSError, but the scan's end, not a failure
        except SCAN_ERRORS as exc:
            raise AdapterError(self.adapter, f"cannot scan: {exc or type(exc).__name__}") from exc

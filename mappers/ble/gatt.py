"""``edgetwin mapper ble scan`` and ``gatt``: the devices around and what one offers, for a Device's YAML."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from bleak import BleakClient

from mappers.ble.driver import BLE_ERRORS, BleSettings
from mappers.ble.errors import AdapterError
from mappers.ble.finder import DeviceFinder
from mappers.sdk import DeviceUnreachableError


@dataclass(frozen=True)
class GattRow:
    """One characteristic of a device: its service, UUID, handle and properties (read, write, notify...)."""

    service: str
    characteristic: str
    handle: int
    properties: tuple[str, ...]
    description: str


def format_rows(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns padded to their widest cell; the last column is not padded."""
    table = [list(header), *[list(row) for row in rows]]
    widths = [max(len(line[column]) for line in table) for column in range(len(header) - 1)]
    return [
        "  ".join(
            [*(cell.ljust(width) for cell, width in zip(line, widths, strict=False)), line[-1]]
        ).rstrip()
        for line in table
    ]


async def scan_table(settings: BleSettings, timeout: float) -> list[str]:
    """The devices heard within ``timeout`` seconds: address, name, RSSI, advertised services."""
    rows = await DeviceFinder(settings.adapter).scan(timeout)
    return format_rows(
        ("ADDRESS", "NAME", "RSSI", "SERVICES"),
        [(row.address, row.name or "-", str(row.rssi), ",".join(row.services) or "-") for row in rows],
    )


async def list_gatt(address: str, settings: BleSettings) -> list[GattRow]:
    """Connect to ``address`` and list its characteristics; :class:`DeviceUnreachableError` if it cannot."""
    finder = DeviceFinder(settings.adapter)
    try:
        device = await finder.find(address, settings.scan_timeout)
    except AdapterError as exc:
        raise DeviceUnreachableError(address, str(exc)) from exc
    if device is None:
        raise DeviceUnreachableError(
            address, f"not found by a {settings.scan_timeout:g}s scan on {settings.adapter}"
        )
    client = BleakClient(device, timeout=settings.connect_timeout, bluez={"adapter": settings.adapter})
    try:
        await client.connect()
    except BLE_ERRORS as exc:
        raise DeviceUnreachableError(address, f"cannot connect: {exc or type(exc).__name__}") from exc
    try:
        return [
            GattRow(
                service.uuid,
                characteristic.uuid,
                characteristic.handle,
                tuple(characteristic.properties),
                characteristic.description,
            )
            for service in client.services
            for characteristic in service.characteristics
        ]
    finally:
        with contextlib.suppress(*BLE_ERRORS):
            async with asyncio.timeout(settings.timeout):
                await client.disconnect()


async def gatt_table(address: str, settings: BleSettings) -> list[str]:
    """:func:`list_gatt` as a table: service, characteristic, handle, properties, description."""
    rows = await list_gatt(address, settings)
    return format_rows(
        ("SERVICE", "CHARACTERISTIC", "HANDLE", "PROPERTIES", "DESCRIPTION"),
        [
            (row.service, row.characteristic, str(row.handle), ",".join(row.properties), row.description)
            for row in rows
        ],
    )

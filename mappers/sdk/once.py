"""``--once``: read every property of every device one time, without MQTT (handy on a new gateway)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from mappers.sdk.driver import DeviceConfig, ProtocolPlugin
from mappers.sdk.errors import DeviceUnreachableError, MapperConfigError, PropertyError
from mappers.sdk.values import reported_text


@dataclass(frozen=True)
class Row:
    """One property's outcome: its twin value, or the error that prevented reading it."""

    device: str
    property: str
    value: str | None = None
    error: str | None = None


async def read_once(
    plugin: ProtocolPlugin, devices: Sequence[DeviceConfig], *, timeout: float = 10.0
) -> list[Row]:
    """Read each device's properties once (devices in parallel); one :class:`Row` per property."""
    per_device = await asyncio.gather(*(_read_device(plugin, device, timeout) for device in devices))
    return [row for rows in per_device for row in rows]


async def _read_device(plugin: ProtocolPlugin, device: DeviceConfig, timeout: float) -> list[Row]:
    try:
        driver = plugin.create_driver(device, lambda _seconds: None)
    except MapperConfigError as exc:
        return [Row(device.id, "-", error=str(exc))]
    try:
        async with asyncio.timeout(timeout):
            await driver.connect()
            readings = await driver.read_many(device.properties)
    except DeviceUnreachableError as exc:
        return [Row(device.id, prop.name, error=exc.reason) for prop in device.properties]
    except TimeoutError:
        return [
            Row(device.id, prop.name, error=f"no answer within {timeout:g}s") for prop in device.properties
        ]
    finally:
        await driver.close()
    rows = []
    for prop in device.properties:
        try:
            rows.append(
                Row(device.id, prop.name, value=reported_text(device.id, prop, readings.get(prop.name)))
            )
        except PropertyError as exc:
            rows.append(Row(device.id, prop.name, error=exc.reason))
    return rows

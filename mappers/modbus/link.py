"""Physical Modbus links shared by the devices on them: one pymodbus client and one lock per link.

An RTU line (a serial port) carries several slaves but only one request at a time, so its devices share one
client and take the line's lock for each request; a TCP endpoint (host, port) serving several slave ids (a
gateway) is shared the same way. The lock is per link, never per device.

pymodbus exceptions stop here: a request returns the response PDU (possibly a Modbus exception response, for
the driver to attribute to its properties) or raises :class:`~mappers.sdk.errors.DeviceUnreachableError`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pymodbus import FramerType, ModbusException
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

from device_models import CommunicateMode, ModbusProtocolConfig
from mappers.sdk.errors import DeviceUnreachableError


@dataclass(frozen=True)
class LinkSettings:
    """Timing of every request on a link."""

    timeout: float = 1.0
    """Seconds to wait for an answer (and for a TCP connection)."""
    retries: int = 1
    """Extra attempts after a timeout before the device counts as unreachable."""


def link_key(config: ModbusProtocolConfig) -> tuple[str, str, int]:
    """What identifies a physical link: a TCP endpoint, or a serial port."""
    if config.communicate_mode is CommunicateMode.RTU:
        return ("rtu", str(config.serial_port), 0)
    return ("tcp", str(config.ip), config.port)


def _serial_settings(config: ModbusProtocolConfig) -> tuple[int, int, str, int]:
    return (config.baud_rate, config.data_bits, config.parity.letter, config.stop_bits)


class ModbusLink:
    """One pymodbus client with its lock, opened while at least one device uses it."""

    def __init__(self, config: ModbusProtocolConfig, settings: LinkSettings) -> None:
        self.key = link_key(config)
        self._settings = settings
        self._lock = asyncio.Lock()
        self._waiting = 0
        self._users: set[object] = set()
        self._configure(config)

    def _configure(self, config: ModbusProtocolConfig) -> None:
        self.config = config
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if config.communicate_mode is CommunicateMode.RTU:
            baudrate, bytesize, parity, stopbits = _serial_settings(config)
            self._client = AsyncModbusSerialClient(
                str(config.serial_port),
                framer=FramerType.RTU,
                baudrate=baudrate,
                bytesize=bytesize,
                parity=parity,
                stopbits=stopbits,
                timeout=self._settings.timeout,
                retries=self._settings.retries,
                reconnect_delay=0,  # the SDK reconnects, with its own backoff
            )
        else:
            self._client = AsyncModbusTcpClient(
                str(config.ip),
                port=config.port,
                timeout=self._settings.timeout,
                retries=self._settings.retries,
                reconnect_delay=0,
            )

    def admit(self, config: ModbusProtocolConfig) -> str | None:
        """Take a new device with ``config`` onto this link; returns why it cannot, else None.

        A serial line has one speed and framing: a device that wants other settings is refused while the
        line is in use, and reconfigures it otherwise (its earlier devices were removed or changed).
        """
        if self.key[0] != "rtu" or _serial_settings(config) == _serial_settings(self.config):
            return None
        if self._users:
            return "baudRate/dataBits/parity/stopBits differ from another device on the same serial port"
        self._configure(config)
        return None

    async def open(self, user: object, device: str) -> None:
        """Open the link for ``user`` (a driver) if it is not open yet."""
        self._users.add(user)
        async with self._lock:
            if self._client.connected:
                return
            try:
                connected = await self._client.connect()
            except (ModbusException, OSError) as exc:
                raise DeviceUnreachableError(device, f"cannot open {self._describe()}: {exc}") from exc
            if not connected:
                raise DeviceUnreachableError(device, f"cannot connect to {self._describe()}")

    def release(self, user: object) -> None:
        """``user`` is done with the link; the last one out closes it."""
        self._users.discard(user)
        if not self._users:
            self._client.close()

    async def request(
        self, device: str, call: Callable[[Any], Awaitable[Any]], record: Callable[[float], None]
    ) -> Any:
        """Run one request (``call(client)``) under the link's lock; returns the response PDU."""
        self._waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self._waiting -= 1
        try:
            response = await self._exchange(device, call, record)
        finally:
            self._lock.release()
        if self._waiting:
            # Let the next device send its request before this one decodes its answer: the link then
            # carries a request while this device's work is done, instead of idling through it.
            await asyncio.sleep(0)
        return response

    async def _exchange(
        self, device: str, call: Callable[[Any], Awaitable[Any]], record: Callable[[float], None]
    ) -> Any:
        started = time.perf_counter()
        try:
            return await call(self._client)
        except ConnectionException as exc:
            raise DeviceUnreachableError(device, f"connection to {self._describe()} lost: {exc}") from exc
        except ModbusIOException as exc:
            raise DeviceUnreachableError(device, f"no valid answer from {self._describe()}: {exc}") from exc
        except (ModbusException, OSError) as exc:
            raise DeviceUnreachableError(device, f"{self._describe()}: {exc}") from exc
        finally:
            record(time.perf_counter() - started)

    def _describe(self) -> str:
        kind, where, port = self.key
        return f"serial port {where}" if kind == "rtu" else f"{where}:{port}"
